"""`icl report SWEEP_DIR` (``icl.report.writer.write_report``): paper 1's figures and tables from a
sweep's finished runs, one module per section under sections/, evaluating whatever the runs lack."""

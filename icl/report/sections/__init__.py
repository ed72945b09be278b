"""The sections of a report, one module each: ``applies(runs) -> bool`` says from the runs' configs
whether the section has anything to show, ``write(report) -> str`` writes its files and returns its
Markdown."""

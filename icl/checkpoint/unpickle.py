"""A restricted reader for torch.save archives that torch's weights-only loader refuses because some
entry (e.g. an optimiser state) holds other objects: tensors and plain containers are rebuilt, every
other object becomes an inert ``Opaque`` placeholder. Of what the file names, only torch's tensor
rebuild and OrderedDict are called, so nothing in it runs; the caller keeps only the tensors it
needs and refuses a placeholder there."""

from __future__ import annotations

import collections
import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch._utils import _rebuild_tensor_v2

from icl.errors import ICLError


class Opaque:
    """What an object of any class outside the allowed few becomes: it takes any constructor
    arguments and any state and keeps none of them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:  # a dict or list subclass being filled
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _StorageType:
    """Stands for a ``torch.<Dtype>Storage`` class named in the archive: only its dtype is read."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
# The functions and classes the archive may name that are rebuilt for real: plain containers and
# torch's tensor rebuild (which only views a storage read from the archive).
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, opaque: list[str]) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.opaque = archive, prefix, opaque
        self.storages: dict[str, torch.storage.TypedStorage] = {}  # by key: tensors that share one stay views of it

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        self.opaque.append(f"{module}.{name}")
        return Opaque

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:60]}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType):
            raise pickle.UnpicklingError("a storage of an unknown type")
        if key in self.storages:
            return self.storages[key]
        raw = self.archive.read(f"{self.prefix}data/{key}")
        if len(raw) != numel * kind.dtype.itemsize:
            raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes for {numel} elements of {kind.dtype}")
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        self.storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=kind.dtype, _internal=True)
        return self.storages[key]


def load_restricted(p: Path) -> tuple[Any, list[str]]:
    """The contents of the torch.save archive ``p`` with every object outside tensors and plain
    containers replaced by an ``Opaque``, and the names of the classes so replaced."""
    try:
        with zipfile.ZipFile(p) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise ICLError(f"{p}: not a torch.save archive (no data.pkl); allowed: a file written by torch.save")
            prefix = pkl[0].removesuffix("data.pkl")
            order = f"{prefix}byteorder"
            if order in archive.namelist() and archive.read(order).decode(errors="replace") != sys.byteorder:
                raise ICLError(f"{p}: written on a machine of another byte order; allowed: {sys.byteorder}-endian")
            opaque: list[str] = []
            obj = _Unpickler(archive.read(pkl[0]), archive, prefix, opaque).load()
            return obj, opaque
    except ICLError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, TypeError, ValueError, RuntimeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ICLError(f"{p}: not a readable checkpoint (truncated or corrupted?): {reason}") from None

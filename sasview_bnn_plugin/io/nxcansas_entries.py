"""Reading NXcanSAS HDF5 files one SASentry at a time, with h5py.

sasdata's NXcanSAS reader holds every entry of a file in memory before it
returns (and spends most of its time compiling regular expressions of node
paths). For files of many entries, :func:`plan_entries` inspects the file's
layout without reading any array and :func:`read_entry` reads one entry's
curve, so memory stays bounded by one entry.

Only the plain layout is read here: every top-level group is a SASentry that
holds exactly one SASdata group with a 1-D signal I and one 1-D Q axis (plus
optional Idev and one Q resolution/uncertainty dataset, all of the same
length). Anything else (2D or multi-frame data, several SASdata groups per
entry, top-level datasets, unusual class names) makes
:func:`plan_entries` return None and the caller lets sasdata read the whole
file. Within the plain layout the reading follows sasdata's NXcanSAS reader
step by step (which attribute names the signal, the Q axis and their
uncertainties, which dataset's ``units`` attribute is used, the title rule)
and hands the arrays to sasdata's own post-processing (unit conversion to
1/Å, sorting by q, dropping non-finite points), so the curves equal those of
``sasdata.dataloader.loader.Loader``. One deliberate difference: sasdata
refuses the whole file when one entry's q unit is missing or unknown to its
converter; here that entry keeps q and the unit string as they are (a
missing unit is None) and the preprocessing decides (assume 1/Å with a note,
or refuse the unit with a message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

#: Class names sasdata's reader gives a special meaning (matched as regular expressions).
_ENTRY, _DATA = "SASentry", "SASdata"
#: Dataset names sasdata's reader treats as metadata wherever they are.
_METADATA_KEYS = frozenset({"definition", "run", "title", "SASnote"})
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_]+$")
#: Node paths that certainly compile as regular expressions (compiling them all is slow).
_SAFE_PATH = re.compile(r"^[\w/.\- ]*$")


class NotPlainLayout(Exception):
    """The file is not in the plain layout read here; sasdata must read it."""


@dataclass
class EntryPlan:
    """Where one entry's curve lives in the file.

    ``roles`` lists the SASdata datasets in sasdata's reading order with the
    field each one fills: "y" (I), "dy" (Idev), "x" (Q) or "dx" (Q resolution).
    ``units`` maps each of those datasets to its ``units`` attribute.
    ``convert_q`` is False when sasdata cannot convert the q unit to 1/Å.
    """

    entry: str
    data_group: str
    title: Any
    roles: list[tuple[str, str]] = field(default_factory=list)
    units: dict[str, Any] = field(default_factory=dict)
    convert_q: bool = True


def _attr(node: Any, key: str, default: Any = None) -> Any:
    from sasdata.dataloader.readers.cansas_reader_HDF5 import h5attr

    return h5attr(node, key, default)


def _class_name(node: Any) -> str | None:
    """The class sasdata's reader sees for a node; refuses names it would treat oddly."""
    name = _attr(node, "canSAS_class")
    if isinstance(name, (list, tuple, np.ndarray)):
        name = name[0] if len(name) else None
    if name is None:
        name = _attr(node, "NX_class")
    if name is None:
        if not _SAFE_PATH.match(node.name):
            re.compile(node.name)  # sasdata compiles the node path; a path it cannot compile stops its read
        return None
    if not isinstance(name, str) or not _PLAIN_NAME.match(name):
        raise NotPlainLayout(f"class name {name!r}")
    return name


def _matches(class_name: str | None, target: str) -> bool:
    """sasdata's test ``re.compile(class_name).match(target)`` for a plain class name."""
    return class_name is not None and target.startswith(class_name)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (np.ndarray, list)):
        return list(value)
    return value.split(",") if isinstance(value, str) else [value]


def _walk(group: h5py.Group):
    """(key, kind, node) for every node below ``group`` in sasdata's reading order (depth first, by key).

    ``kind`` is h5py.Group or h5py.Dataset; ``node`` is opened for groups and
    for datasets named ``title`` only (opening every dataset of a file with
    thousands of notes is what makes reading slow).
    """
    for key in group.keys():
        kind = group.get(key, getclass=True)
        if kind is None:
            raise NotPlainLayout(f"dangling link {key!r}")
        if kind is h5py.Group:
            node = group[key]
            yield key, kind, node
            yield from _walk(node)
        else:
            path = f"{group.name.rstrip('/')}/{key}"
            if not _SAFE_PATH.match(path):
                re.compile(path)  # sasdata compiles the path of a dataset without a class
            yield key, kind, (group[key] if key == "title" else None)


def _title(dataset: h5py.Dataset, current: Any) -> Any:
    """The title sasdata's reader takes from a dataset named ``title``."""
    from sasdata.dataloader.filereader import decode

    values = dataset[()]
    if np.isscalar(values):
        values = [values]
    title = current
    for point in values:
        if isinstance(point, np.ndarray) and point.dtype.char == "S":
            point = decode(bytes(point))
        else:
            point = decode(point)
        title = point
    return title


def _plan_data_group(group: h5py.Group) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Roles and units of the datasets of one SASdata group (see :class:`EntryPlan`)."""
    signal = _attr(group, "signal", "I")
    axes = _as_list(_attr(group, "I_axes", ["Q"]))
    q_indices = _as_list(_attr(group, "Q_indices", [0]))
    q_names = [axes[int(v)] for v in q_indices]
    if not isinstance(signal, str) or len(q_names) != 1 or not isinstance(q_names[0], str):
        raise NotPlainLayout("signal or Q axis")
    q_name = q_names[0]
    if signal == q_name or {signal, q_name} & _METADATA_KEYS:
        raise NotPlainLayout("signal and Q names")
    i_node, q_node = group.get(signal), group.get(q_name)
    if not isinstance(i_node, h5py.Dataset) or not isinstance(q_node, h5py.Dataset):
        raise NotPlainLayout("no I or Q dataset")
    i_unc = _attr(i_node, "uncertainties")
    if i_unc is None:
        i_unc = _attr(i_node, "uncertainty")
    q_unc = _attr(q_node, "uncertainties")
    if q_unc is None:
        q_unc = _attr(q_node, "uncertainty")
    q_res = _attr(q_node, "resolutions")
    q_unc_names = [] if q_unc is None else _as_list(q_unc)
    q_res_names = [] if q_res is None else _as_list(q_res)
    if len(q_unc_names) > 1 or len(q_res_names) > 1 or not (i_unc is None or isinstance(i_unc, str)):
        raise NotPlainLayout("several Q uncertainties")
    n_points = q_node.shape
    roles: list[tuple[str, str]] = []
    units: dict[str, Any] = {}
    for key in group.keys():
        node = group.get(key)
        if node is None:
            raise NotPlainLayout("dangling link")
        if isinstance(node, h5py.Group):
            continue  # notes (e.g. IGOR wave notes) that sasdata files as metadata
        # sasdata's elif chain, in its order
        if key == signal:
            role = "y"
        elif key == i_unc:
            role = "dy"
        elif key == q_name:
            role = "x"
        elif key in q_res_names or key in q_unc_names:
            role = "dx"
        else:
            continue
        if key in _METADATA_KEYS:
            raise NotPlainLayout("metadata name used for data")
        if node.ndim != 1 or node.shape != n_points or node.size == 0 or node.dtype.kind not in "fiu":
            raise NotPlainLayout("not 1-D numbers of Q's length")
        unit = _attr(node, "units")
        if unit is None:
            unit = _attr(node, "unit")
        if unit is not None and not isinstance(unit, str):
            unit = str(unit)  # a number or a list where text belongs: the preprocessing names it
        roles.append((key, role))
        units[key] = unit
    return roles, units


def _converts_q(unit: Any) -> bool:
    """Whether sasdata's post-processing converts q in ``unit`` to 1/Å without failing.

    sasdata's reader gives up on the whole file when one entry's q unit is
    missing or unknown to it; here such an entry keeps its q and its unit
    string as they are, and the preprocessing says what it makes of the unit.
    """
    from sasdata.data_util.nxsunit import Converter

    try:
        Converter(unit)(np.ones(1), units="1/A")
    except KeyError:
        return True  # sasdata catches this one and leaves q unconverted
    except Exception:
        return False
    return True


def plan_entries(h5: h5py.File) -> list[EntryPlan] | None:
    """The plan of every entry of a plain NXcanSAS file, or None if sasdata must read it.

    Reads attributes, shapes and ``title`` datasets only, never the curves.
    """
    try:
        plans = []
        for key in h5.keys():
            entry = h5.get(key)
            if not isinstance(entry, h5py.Group) or _class_name(entry) != _ENTRY:
                return None
            title: Any = None
            data_groups = []
            for name, kind, node in _walk(entry):
                if kind is h5py.Group:
                    cls = _class_name(node)
                    if _matches(cls, _ENTRY):
                        return None
                    if _matches(cls, _DATA):
                        if cls != _DATA or node.parent.name != entry.name:
                            return None
                        data_groups.append(node)
                elif node is not None:  # a dataset named title
                    title = _title(node, title)
            if len(data_groups) != 1:
                return None
            roles, units = _plan_data_group(data_groups[0])
            if sorted(r for _, r in roles if r in "xy") != ["x", "y"]:
                return None
            convert_q = _converts_q(units[next(k for k, r in roles if r == "x")])
            plans.append(EntryPlan(entry=key, data_group=data_groups[0].name, title=title, roles=roles, units=units, convert_q=convert_q))
        return plans or None
    except NotPlainLayout:
        return None
    except Exception:  # noqa: BLE001 - any surprise in an odd file: let sasdata decide
        return None


def _small_value(node: Any) -> Any:
    """The one value of a scalar (or one-element) dataset, text decoded; None for anything larger."""
    from sasdata.dataloader.filereader import decode

    if not isinstance(node, h5py.Dataset) or node.size != 1:
        return None
    value = node[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    return decode(value) if isinstance(value, bytes) else value


#: Groups whose contents sasdata's reader files as instrument description, not as metadata of the measurement.
_INSTRUMENT_CLASSES = frozenset({"SASinstrument", "SASdetector", "SAScollimation", "SASaperture", "SASsource",
                                 "SAStransmission_spectrum", "NXinstrument", "NXdetector", "NXcollimator", "NXaperture", "NXsource"})


def _read_entry_metadata(entry: h5py.Group, info: Any) -> None:
    """What sasdata's reader files about the measurement, for one entry: the run; SASsample ``temperature``
    (with its ``units``); SASprocess ``date``; the scalar datasets of the entry and of its other groups
    (notes such as IGOR wave notes, also inside SASdata), first key wins, as ``meta_data``. Scalar datasets
    only, never the curve's arrays; a metadata surprise never costs the curve."""
    from sasdata.dataloader.data_info import Process

    def visit(group: h5py.Group, in_data: bool) -> None:
        for key in group.keys():
            kind = group.get(key, getclass=True)
            if kind is h5py.Dataset and not in_data and key not in ("title", "definition"):
                value = _small_value(group[key])
                if value is None:
                    continue
                if key == "run" and group is entry:
                    info.run.append(value)
                else:
                    info.meta_data.setdefault(key, value)
            elif kind is h5py.Group:
                child = group[key]
                name = _attr(child, "canSAS_class") or _attr(child, "NX_class")
                if name in ("SASsample", "NXsample"):
                    if "temperature" in child:
                        info.sample.temperature = _small_value(child["temperature"])
                        unit = _attr(child["temperature"], "units")
                        if isinstance(unit, str):
                            info.sample.temperature_unit = unit
                elif name in ("SASprocess", "NXprocess"):
                    if "date" in child and (date := _small_value(child["date"])) is not None:
                        process = Process()
                        process.date = date
                        info.process.append(process)
                elif name not in _INSTRUMENT_CLASSES:
                    visit(child, in_data=name in (_DATA, "NXdata"))

    try:
        visit(entry, in_data=False)
    except Exception:  # noqa: BLE001 - metadata are a bonus
        return


def read_entry(h5: h5py.File, plan: EntryPlan, filename: str) -> Any:
    """The sasdata ``Data1D`` of one planned entry, post-processed by sasdata itself.

    Raises OSError (or another h5py error) if the entry's data cannot be read.
    """
    from sasdata.dataloader.data_info import DataInfo, combine_data_info_with_plottable, plottable_1D
    from sasdata.dataloader.readers.cansas_reader_HDF5 import Reader

    group = h5[plan.data_group]
    plottable = plottable_1D(np.array(0), np.array(0))
    for key, role in plan.roles:
        values = np.asarray(group[key][()]).flatten()
        if role == "y":
            plottable.y = values
            plottable.yaxis("Intensity", plan.units[key])
        elif role == "dy":
            plottable.dy = values
        elif role == "x":
            plottable.xaxis("Q", plan.units[key])
            plottable.x = values
        else:
            plottable.dx = values
    info = DataInfo()
    info.filename = filename
    if plan.title is not None:
        info.title = plan.title
    _read_entry_metadata(h5[plan.entry], info)
    data = combine_data_info_with_plottable(plottable, info)
    reader = Reader()
    reader.output = [data]
    if plan.convert_q:
        reader.convert_data_units()
    reader.sort_data()
    return reader.output[0]

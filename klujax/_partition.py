"""Partitioning klujax's FFI calls along the batch, under ``jit`` with sharded inputs.

Every klujax op is independent across its batch members (``n_lhs``, the "L" factor) and
across right-hand sides (``n_rhs``, "R"): a device can solve its members, or its
right-hand sides, alone. This module tells XLA so, for every FFI target, with a custom
call partitioner registered under the target's own name
(``xla_client.register_custom_call_partitioner``, the mechanism under
``jax.experimental.custom_partitioning``):

* sharding propagation: with Shardy, an ``sdy.sharding_rule`` on the custom call
  (:func:`sdy_rule`, added by the lowering); with GSPMD, the ``infer`` / ``propagate``
  callbacks below;
* partitioning: :func:`_partition` picks one tiling of the L and R factors for the
  operands and the result, and returns the per-device computation: the same FFI call on
  the local blocks.

Why not JAX's other two tools: a *batch-partitionable* FFI target (what jaxlib's LAPACK
kernels use) shards every operand along its leading dimensions, which would cut the
pattern ``Ai``/``Aj`` (no batch dimension) and cannot express a broadcast ``Ax`` of one
member or the right-hand-side factor; ``custom_partitioning`` wraps the call in a
non-side-effecting custom call, so XLA could drop a ``free`` whose result is unused or
merge two identical ``factor`` calls. A partitioner registered under the target's name
keeps the FFI call itself (side effects included) in the HLO, and survives
``jax.export``: an importing process registers it again.

Rules:

* ``Ai``, ``Aj`` and symbolic handles are replicated: every device needs the whole
  pattern (small next to a batch of values).
* Numeric handles never move: they are addresses in the memory of the process (and the
  device) that factored them. An op that takes them adopts their tiling.
* A factor is only split when its size is a multiple of its number of tiles (no padded
  members: a padded ``factor`` would create handles that nothing frees).
* Ordering-only operands (``dependency=``) keep whatever sharding they have.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import numpy as np

from ._compat import build_partitioned_module, decode_ffi_attributes, enable_x64, hlo_sharding, xc
from ._ops import OPS, OpSpec, labels, target
from ._options import KLUOptions

#: the partitionable factors, in the order they appear in every array's dimensions
FACTORS = ("L", "R")

Labels = tuple  # per dimension: "L", "R" or None (whole on every device)


# == tilings: device arrays of shape (*tiles per dimension, replicas) ==#


def _tiles(s: Any, ndim: int) -> np.ndarray | None:
    """The device array of a tiled sharding; None if replicated or not a plain tiling."""
    if s is None or s.is_replicated() or not s.is_tiled():
        return None
    dims = list(s.tile_assignment_dimensions())
    if any(t != xc.OpSharding.Type.REPLICATED for t in s.subgroup_types()):
        return None  # manual subgroups (inside shard_map): not ours to partition
    devs = np.asarray(s.tile_assignment_devices())
    if len(dims) == ndim:
        dims.append(1)
    elif len(dims) != ndim + 1:
        return None
    return devs.reshape(dims)


def _sharding(arr: np.ndarray | None) -> Any:
    if arr is None or all(t == 1 for t in arr.shape[:-1]):
        return xc.HloSharding.replicate()
    return hlo_sharding(list(arr.shape[:-1]), arr.shape[-1], arr.reshape(-1).tolist())


def _to_factors(arr: np.ndarray, lab: Labels) -> np.ndarray:
    """(*dims, rep) -> (tL, tR, rep): other dimensions' tiles become replicas."""
    k = arr.ndim - 1
    pos = {f: d for d, f in enumerate(lab) if f is not None}
    keep = [pos[f] for f in FACTORS if f in pos]
    rest = [d for d in range(k) if d not in keep]
    a = np.transpose(arr, keep + rest + [k])
    return a.reshape([arr.shape[pos[f]] if f in pos else 1 for f in FACTORS] + [-1])


def _from_factors(F: np.ndarray, lab: Labels) -> np.ndarray:
    """(tL, tR, rep) -> (*dims, rep) for an array with dimension factors ``lab``."""
    present = [i for i, f in enumerate(FACTORS) if f in lab]
    absent = [i for i in range(len(FACTORS)) if i not in present]
    a = np.transpose(F, present + absent + [len(FACTORS)])
    a = a.reshape([F.shape[i] for i in present] + [-1])
    return a.reshape([F.shape[FACTORS.index(f)] if f else 1 for f in lab] + [a.shape[-1]])


def _divisible(F: np.ndarray, sizes: dict[str, int]) -> np.ndarray:
    """Makes replicas of the tiles of a factor whose size they do not divide."""
    for i, f in enumerate(FACTORS):
        t = F.shape[i]
        if t > 1 and sizes.get(f, 0) % t:
            a = np.moveaxis(F, i, -2)
            F = np.expand_dims(a.reshape(*a.shape[:-2], -1), i)
    return F


def _sizes(labs: list[Labels | None], shapes: list[tuple]) -> dict[str, int]:
    return {f: shape[d] for lab, shape in zip(labs, shapes) if lab for d, f in enumerate(lab) if f}


def _choose(
    spec: OpSpec,
    ins: list,
    out: Labels,
    arg_shardings: list,
    in_shapes: list,
    result_sharding: Any,
    out_shape: tuple,
) -> np.ndarray | None:
    """The factor tiling: from the numeric handles, else the result, else an operand."""
    order = (
        [i for i, r in enumerate(spec.operands) if r == "numeric"]
        + [-1]
        + [i for r in ("rhs", "values") for i, r2 in enumerate(spec.operands) if r2 == r]
    )
    for i in order:
        lab, s, shape = (
            (out, result_sharding, out_shape) if i < 0 else (ins[i], arg_shardings[i], in_shapes[i])
        )
        if not lab or not any(lab):
            continue
        arr = _tiles(s, len(shape))
        if arr is not None:
            F = _to_factors(arr, lab)
            if any(t > 1 for t in F.shape[:-1]):
                return F
    return None


def _shardings(
    spec: OpSpec, arg_shardings: list, in_shapes: list, result_sharding: Any, out_shape: tuple
) -> tuple[list, Any, list[tuple], tuple]:
    """(operand shardings, result sharding, local operand shapes, local result shape)."""
    ins, out = labels(spec, in_shapes, out_shape)
    F = _choose(spec, ins, out, arg_shardings, in_shapes, result_sharding, out_shape)
    if F is not None:
        F = _divisible(F, _sizes([*ins, out], [*in_shapes, out_shape]))
    args, local = [], []
    for lab, s, shape in zip(ins, arg_shardings, in_shapes):
        if lab is None:  # ordering only: keep its sharding (no data moves for it)
            arr = _tiles(s, len(shape))
            args.append(s if arr is not None else xc.HloSharding.replicate())
        else:
            arr = None if F is None else _from_factors(F, lab)
            args.append(_sharding(arr))
        local.append(
            tuple(-(-d // t) for d, t in zip(shape, arr.shape)) if arr is not None else shape
        )
    arr = None if F is None else _from_factors(F, out)
    res_local = (
        tuple(d // t for d, t in zip(out_shape, arr.shape)) if arr is not None else out_shape
    )
    return args, _sharding(arr), local, res_local


# == the callbacks XLA calls ==#


def _shape(s: Any) -> tuple:
    return tuple(s.dimensions())


def _params(spec: OpSpec, backend_config: bytes | str) -> dict[str, Any]:
    """The primitive's params from the custom call's FFI attributes."""
    attrs = decode_ffi_attributes(backend_config)
    params = {k: (KLUOptions.from_attribute(v) if k == "options" else v) for k, v in attrs.items()}
    if spec.effectful:
        params["effect"] = False  # the per-device call is a plain FFI call with side effects
    return params


def _manual(s: Any) -> str:
    """ "all" for a manual sharding (inside shard_map), "some" for a partly manual one."""
    if s is None:
        return ""
    if s.is_manual():
        return "all"
    return "some" if any(t == xc.OpSharding.Type.MANUAL for t in s.subgroup_types()) else ""


def _partition(
    spec: OpSpec,
    sfx: str,
    arg_shapes: Any,
    arg_shardings: Any,
    result_shape: Any,
    result_sharding: Any,
    backend_config: Any,
) -> Any:
    in_shapes = [_shape(s) for s in arg_shapes]
    out_shape = _shape(result_shape)
    manual = {_manual(s) for s in [*arg_shardings, result_sharding]}
    if "some" in manual:
        raise NotImplementedError(
            f"klujax.{spec.name}: inside a shard_map that leaves some mesh axes automatic; "
            "make every mesh axis manual (the default) or none"
        )
    if "all" in manual:  # inside shard_map: the shapes are the device's own already
        args, res, local = list(arg_shardings), result_sharding, in_shapes
    else:
        args, res, local, _ = _shardings(
            spec, list(arg_shardings), in_shapes, result_sharding, out_shape
        )
    avals = [jax.ShapeDtypeStruct(shape, s.numpy_dtype()) for shape, s in zip(local, arg_shapes)]
    p = spec.primitives[sfx]
    params = _params(spec, backend_config)
    with enable_x64(True):  # uint64 handles and f64 values keep their dtypes
        closed = jax.make_jaxpr(lambda *a: p.bind(*a, **params))(*avals)
    return build_partitioned_module(closed), args, res


def _infer(
    spec: OpSpec,
    sfx: str,
    arg_shapes: Any,
    arg_shardings: Any,
    result_shape: Any,
    backend_config: Any,
) -> Any:
    in_shapes = [_shape(s) for s in arg_shapes]
    _, res, _, _ = _shardings(spec, list(arg_shardings), in_shapes, None, _shape(result_shape))
    return res


def _propagate(spec: OpSpec, sfx: str, user_sharding: Any, shape: Any, backend_config: Any) -> Any:
    out_shape = _shape(shape)
    _, out = labels(spec, [], out_shape)
    arr = _tiles(user_sharding, len(out_shape))
    if arr is None or not any(out):
        return xc.HloSharding.replicate()
    F = _divisible(_to_factors(arr, out), _sizes([out], [out_shape]))
    return _sharding(_from_factors(F, out))


def sdy_rule(spec: OpSpec, in_shapes: list[tuple], out_shape: tuple) -> tuple[tuple, tuple, tuple]:
    """Shardy's view of the rules: (operand mappings, result mapping, need-replication factors).

    L and R are shared factors; every other dimension has a factor of its own that must
    stay replicated, except the dimensions of ordering-only operands, which are free.
    """
    ins, out = labels(spec, in_shapes, out_shape)
    need, count = [], [0]

    def name(f: str | None, free: bool = False) -> str:
        if f:
            return f.lower()
        count[0] += 1
        n = f"d{count[0]}"
        if not free:
            need.append(n)
        return n

    operands = tuple(
        tuple(name(f) for f in lab)
        if lab is not None
        else tuple(name(None, free=True) for _ in shape)
        for lab, shape in zip(ins, in_shapes)
    )
    return operands, (tuple(name(f) for f in out),), tuple(need)


def register() -> None:
    """Registers the partitioner of every FFI target the lowerings emit."""
    for spec in OPS.values():
        for sfx in spec.primitives:
            xc.register_custom_call_partitioner(
                target(spec, sfx),
                partial(_propagate, spec, sfx),
                partial(_partition, spec, sfx),
                partial(_infer, spec, sfx),
                can_side_effecting_have_replicated_sharding=True,
            )


register()

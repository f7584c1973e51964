"""Attributes profiled kernels to the Python source that produced them.

A profile names kernels (``input_add_reduce_fusion_31``, ``loop_select_fusion``), not the model
code behind them. The compiled module's HLO text carries, for every instruction, its op name
(``jit(train_step)/transpose(jvp())/reduce_sum``: ``transpose(`` marks the backward pass) and a
stack frame id into its FileNames / FunctionNames / FileLocations / StackFrames tables. This
module joins the two: a kernel's HLO instruction (by name; GPU kernel names write the
instruction's ``.`` as ``_``, and cuBLAS / cuDNN kernels carry it in the trace event's
``hlo_op`` argument) -> the first frame of our own code on its stack -> "pass file:line function
[primitive]". ``benchmarks/common.profile_calls`` reports the largest such sources.
"""
from __future__ import annotations

import re
from typing import Iterable

# An instruction line: "%name = <shape> opcode(...), ..., metadata={op_name="..." stack_frame_id=N ...}".
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=.*?metadata=\{([^}]*)\}')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_FRAME_ID = re.compile(r'stack_frame_id=(\d+)')
_TABLE_ROW = re.compile(r'^(\d+)\s+(.*)$')
_FIELDS = re.compile(r'(\w+)=("[^"]*"|[^\s}]+)')
_OWN_CODE = ('wvd_jax/', 'benchmarks/', 'tests/')


def _tables(hlo_text: str) -> dict[str, dict[int, str]]:
  """The four stack tables of an HLO module's text: section name -> {id: row text}."""
  tables, current = {}, None
  for line in hlo_text.splitlines():
    stripped = line.strip()
    if stripped in ('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames'):
      current = tables.setdefault(stripped, {})
      continue
    if current is None:
      continue
    row = _TABLE_ROW.match(stripped)
    if row:
      current[int(row.group(1))] = row.group(2)
    else:
      current = None  # A blank line or the next computation ends the table.
  return tables


def _fields(row: str) -> dict[str, str]:
  return {k: v.strip('"') for k, v in _FIELDS.findall(row)}


def _short_path(path: str) -> str:
  for marker in _OWN_CODE:
    at = path.rfind('/' + marker)
    if at >= 0:
      return path[at + 1:]
    if path.startswith(marker):
      return path
  return path.rsplit('/', 1)[-1]


def _is_own(path: str) -> bool:
  return any(('/' + m) in path or path.startswith(m) for m in _OWN_CODE)


class HloSources:
  """Maps instruction names of one compiled module to "pass file:line function [primitive]"."""

  def __init__(self, hlo_text: str):
    tables = _tables(hlo_text)
    files = {i: r.strip('"') for i, r in tables.get('FileNames', {}).items()}
    functions = {i: r.strip('"') for i, r in tables.get('FunctionNames', {}).items()}
    self._locations = {}
    for i, row in tables.get('FileLocations', {}).items():
      f = _fields(row)
      self._locations[i] = (files.get(int(f.get('file_name_id', 0)), '?'),
                            int(f.get('line', 0)), functions.get(int(f.get('function_name_id', 0)), '?'))
    frames = {}
    for i, row in tables.get('StackFrames', {}).items():
      f = _fields(row)
      frames[i] = (int(f.get('file_location_id', 0)), int(f.get('parent_frame_id', 0)))
    # The text printer writes a frame's parent as the parent's id + 1 (a root frame shows its
    # own id as parent: 0 + 1 = 1 for frame 1); a printer without that offset writes 0 for roots.
    offset = 1 if any(i == parent for i, (_, parent) in frames.items()) else 0
    self._frames = {i: (loc, parent - offset) for i, (loc, parent) in frames.items()}
    self._instructions = {}  # normalized name -> (op_name, frame id)
    for line in hlo_text.splitlines():
      m = _INSTRUCTION.match(line)
      if not m:
        continue
      op = _OP_NAME.search(m.group(2))
      frame = _FRAME_ID.search(m.group(2))
      self._instructions[self._normalize(m.group(1))] = (
          op.group(1) if op else '', int(frame.group(1)) if frame else 0)

  @staticmethod
  def _normalize(name: str) -> str:
    return name.replace('.', '_').replace('-', '_')

  def frames(self, frame_id: int) -> list[tuple[str, int, str]]:
    """(file, line, function) from the innermost frame outwards."""
    out, seen = [], set()
    while frame_id and frame_id in self._frames and frame_id not in seen:
      seen.add(frame_id)
      location, parent = self._frames[frame_id]
      if location in self._locations:
        out.append(self._locations[location])
      frame_id = parent
    return out

  def lookup(self, names: Iterable[str]) -> str | None:
    """The source of the first of ``names`` (kernel name, hlo_op argument) that the module has."""
    for name in names:
      if not name:
        continue
      key = self._normalize(name)
      entry = self._instructions.get(key)
      if entry is None:  # Kernels may carry a launch suffix: "fusion_12_1" for "fusion.12".
        trimmed = re.sub(r'_\d+$', '', key)
        entry = self._instructions.get(trimmed) if trimmed != key else None
      if entry is not None:
        return self.describe(*entry)
    return None

  def describe(self, op_name: str, frame_id: int) -> str:
    first = op_name.split(';')[0]
    direction = 'bwd' if 'transpose(' in first else 'fwd'
    primitive = first.rsplit('/', 1)[-1] if first else '?'
    stack = self.frames(frame_id)
    own = next((f for f in stack if _is_own(f[0])), None)
    if own is None:
      where = (f'{_short_path(stack[0][0])}:{stack[0][1]} {stack[0][2]}' if stack
               else 'no source')
    else:
      where = f'{_short_path(own[0])}:{own[1]} {own[2]}'
      if stack[0] is not own:  # Library code under our call (flax's RMSNorm, optax...).
        where += f' via {stack[0][2]}'
    return f'{direction} {where} [{primitive}]'


def attribute(kernels: list[tuple[str, dict, float]], hlo_text: str, calls: int = 1,
              top: int = 15) -> dict:
  """Kernel time by source line: ``kernels`` is (name, event args, ms a call) per launch over
  ``calls`` profiled calls.

  Returns {'by_source': [{'source', 'ms', 'launches'}...] (largest first; ms and launches a
  call), 'attributed_ms', 'unattributed_ms'}.
  """
  sources = HloSources(hlo_text)
  totals: dict[str, list[float]] = {}
  unattributed = 0.0
  for name, args, ms in kernels:
    args = args or {}
    source = sources.lookup((args.get('hlo_op', ''), name, args.get('name', '')))
    if source is None:
      unattributed += ms
      continue
    entry = totals.setdefault(source, [0.0, 0])
    entry[0] += ms
    entry[1] += 1
  ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])
  return {'by_source': [{'source': s[:160], 'ms': round(v[0], 3), 'launches': round(v[1] / calls, 1)}
                        for s, v in ranked[:top]],
          'attributed_ms': round(sum(v[0] for v in totals.values()), 3),
          'unattributed_ms': round(unattributed, 3)}

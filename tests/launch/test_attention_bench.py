"""benchmarks/attention_bench.py: its CPU run checks parity; bad arguments and missing kernels are
reported, not crashes."""
import json

import pytest

from benchmarks import attention_bench


def test_cpu_smoke_run_prints_rows_within_parity(capsys):
  assert attention_bench.main(['--small']) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r['implementation'] for r in rows] == ['xla']
  assert rows[0]['forward_ms'] > 0 and rows[0]['forward_backward_ms'] > 0
  # bfloat16 inputs against the float32 formula: errors of bfloat16 rounding, not of a bug.
  assert 0 < max(rows[0]['max_rel_error'].values()) < 0.02


@pytest.mark.parametrize('argv, message', [(['--impls', 'cudnn,flash3'], "implementation(s) ['flash3']"),
                                           (['--shapes', 'small,huge'], "shape in 'small,huge'")])
def test_unknown_implementation_or_shape_is_refused(argv, message, capsys):
  with pytest.raises(SystemExit):
    attention_bench.main(argv)
  assert message in capsys.readouterr().err


def test_kernel_that_cannot_run_is_a_row_with_its_error():
  # On a CPU tokamax's Mosaic GPU kernel cannot run (or tokamax is not installed): the row says
  # why instead of ending the benchmark.
  row = attention_bench.measure('tiny', 2, 128, 2, 64, 'tokamax_mosaic', None, iters=1)
  assert row['implementation'] == 'tokamax_mosaic'
  assert 'forward_ms' not in row and row['error']

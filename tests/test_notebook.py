"""notebooks/demo.ipynb: stored without outputs, and executed top to bottom on the tiny config.

The notebook runs in a real Jupyter kernel (nbclient, kernel 'python3'). jupyter_client starts
the 'python3' kernel with the Python running this test (it replaces the kernelspec's `python`
with sys.executable), so the kernel sees the project venv; an injected cell asserts that.
"""
import os
import shutil
import subprocess
import sys
import types

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO, hide_package

NOTEBOOK = os.path.join(REPO, 'notebooks', 'demo.ipynb')
PARAMETERS = {'CONFIG', 'TRAIN_STEPS', 'CHECKPOINT', 'SAMPLE_STEPS', 'WORKDIR', 'IMAGE_PATH',
              'VIEWS_DIR', 'TINY'}


def _notebook():
  return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_index(nb):
  tagged = [i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', [])]
  assert len(tagged) == 1, f'expected one cell tagged "parameters", found {len(tagged)}'
  return tagged[0]


def test_notebook_is_stored_without_outputs():
  nb = _notebook()
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code
  for i, cell in enumerate(code):
    assert cell.outputs == [] and cell.execution_count is None, (
        f'code cell {i} of {NOTEBOOK} has outputs; clear them before committing '
        '(notebooks/README.md says how)')


def test_parameters_cell_defaults():
  nb = _notebook()
  values = {}
  exec(nb.cells[_parameters_index(nb)].source, {}, values)  # pylint: disable=exec-used
  assert set(values) == PARAMETERS
  assert values['TINY'] is False and values['CONFIG'] == 'demo'
  assert values['CHECKPOINT'] == 'pretrained/wvd_small'  # The model `make demo` uses.


def _setup_source():
  nb = _notebook()
  return nb.cells[next(i for i, c in enumerate(nb.cells)
                       if c.cell_type == 'code' and 'REPO_URL' in c.source)].source


@pytest.mark.parametrize('runtime,build', [('cpu', 'jax=='), ('gpu', 'jax[cuda12]=='),
                                           ('tpu', 'jax[tpu]==')])
def test_setup_cell_on_a_fake_colab_runtime(runtime, build, tmp_path, monkeypatch):
  """Without wvd_jax installed on Colab: clone, then one pip call with the runtime's JAX build."""
  import glob as glob_module  # pylint: disable=import-outside-toplevel
  clone = tmp_path / 'clone'
  source = _setup_source()
  assert source.count("'/content/wvd_jax'") == 1
  source = source.replace("'/content/wvd_jax'", repr(str(clone)))
  source = source.replace("'https://github.com/<OWNER>/wvd_jax.git'", "'https://example.org/r.git'")
  commands = []

  def fake_run(cmd, check):
    assert check
    commands.append(cmd)
    if cmd[:2] == ['git', 'clone']:
      os.makedirs(cmd[-1])
      shutil.copy(os.path.join(REPO, 'requirements.txt'), cmd[-1])

  hide_package(monkeypatch, 'wvd_jax')
  monkeypatch.setitem(sys.modules, 'google.colab', types.ModuleType('google.colab'))
  monkeypatch.setattr(subprocess, 'run', fake_run)
  monkeypatch.setattr(shutil, 'which', lambda name: '/usr/bin/x' if runtime == 'gpu' else None)
  monkeypatch.setattr(glob_module, 'glob',
                      lambda p: ['/dev/accel0'] if runtime == 'tpu' and 'accel' in p else [])
  monkeypatch.delenv('COLAB_TPU_ADDR', raising=False)
  monkeypatch.setattr(sys, 'path', list(sys.path))
  exec(compile(source, 'setup_cell', 'exec'), {})  # pylint: disable=exec-used
  assert commands[0] == ['git', 'clone', '--depth=1', 'https://example.org/r.git', str(clone)]
  pip = commands[1]
  assert pip[:4] == [sys.executable, '-m', 'pip', 'install'] and pip[-2:] == ['-e', str(clone)]
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    version = next(line.split('==')[1].strip() for line in f if line.startswith('jax=='))
  assert build + version in pip and len(commands) == 2


def test_setup_cell_asks_for_the_repository_url(monkeypatch):
  hide_package(monkeypatch, 'wvd_jax')
  with pytest.raises(RuntimeError, match='make demo'):  # Not Colab: install nothing, explain.
    exec(_setup_source(), {})  # pylint: disable=exec-used
  monkeypatch.setitem(sys.modules, 'google.colab', types.ModuleType('google.colab'))
  with pytest.raises(ValueError, match='edit REPO_URL'):
    exec(_setup_source(), {})  # pylint: disable=exec-used


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
  nb = _notebook()
  injected = nbformat.v4.new_code_cell(
      'import os, sys\n'
      f'assert sys.prefix == {sys.prefix!r}, f"kernel runs {{sys.executable}}, not the test\'s '
      f'Python {sys.executable}"\n'
      f'TINY = True\nWORKDIR = {str(tmp_path / "work")!r}\n')
  injected.metadata['tags'] = ['injected-parameters']
  nb.cells.insert(_parameters_index(nb) + 1, injected)
  client = NotebookClient(nb, kernel_name='python3', timeout=600, startup_timeout=120,
                          resources={'metadata': {'path': str(tmp_path)}})
  client.execute()  # Raises CellExecutionError (with the traceback) on any cell error.

  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
  mimes = [m for o in outputs for m in o.get('data', {})]
  text = ''.join(o.get('text', '') for o in outputs)
  html = ''.join(o.get('data', {}).get('text/html', '') for o in outputs)
  assert 'trained configs/demo.py (TINY) for 3 steps' in text
  assert mimes.count('application/vnd.plotly.v1+json') == 4  # 2 single-image, 2 multi-view.
  assert html.count('<video') == 2 and 'data:video/mp4;base64,' in html
  assert mimes.count('image/png') >= 8  # Inputs, depth maps, re-projections, confidence.
  out = tmp_path / 'work' / 'tiny' / 'outputs'
  for task in ('image_to_3d', 'depth', 'camera_control'):
    assert sorted(os.listdir(out / task)) == ['file', 'test_split'], task
  assert sorted(os.listdir(out / 'multiview')) == ['directory', 'test_split']
  assert (out / 'camera_control' / 'file' / 'video.mp4').stat().st_size > 0
  assert (out / 'image_to_3d' / 'test_split' / 'points.ply').exists()

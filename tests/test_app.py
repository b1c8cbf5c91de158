"""The web demo (app.py): sentences over a video into a browser-playable overlay and per-sentence masks, clear
messages for what a user gets wrong, the model options a checkpoint records, the quick start's model as the
fallback; and the whole app driven in headless Chromium (Debian's chromium and chromium-driver, Selenium)."""
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, SMALL_MODEL, free_port, offline_flags

gr = pytest.importorskip('gradio', reason='the web demo needs requirements-app.txt')
av = pytest.importorskip('av', reason='the web demo needs requirements-app.txt')
import app  # noqa: E402  (after the skips: it needs Gradio)
import main as train_main  # noqa: E402
from inference import load_inference_model  # noqa: E402
from models import build_model  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def example(tmp_path_factory):
    """The app's example: a Ref-Shapes clip (24 frames of 96x128) and a sentence per object."""
    return app.example_clip(tmp_path_factory.mktemp('example'))


def ignore_progress(*args, **kwargs):
    pass


def small_segmenter(checkpoint, tmp_path, *flags):
    args = app.get_parser().parse_args([*SMALL_MODEL, *offline_flags(), '--resume', str(checkpoint), *flags])
    device = torch.device('cpu')
    return app.Segmenter(load_inference_model(args, device), args, device, tmp_path / 'work')


def test_sentences_give_a_playable_overlay_and_masks(small_checkpoint, example, tmp_path):
    video, sentences = example
    assert len(sentences.splitlines()) >= 2
    segmenter = small_segmenter(small_checkpoint, tmp_path, '--clip_len', '12', '--short_side', '96')
    texts = sentences.splitlines()[:2]
    overlay, masks, status = segmenter.segment(video, '\n'.join(texts) + '\n\n  \n', progress=ignore_progress)
    assert status.startswith('24 frames, 2 sentence(s)')
    with av.open(overlay) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ('h264', 'yuv420p')
        frames = [frame.to_image() for frame in container.decode(stream)]
    assert len(frames) == 24 and frames[0].width == 2 * 128 + 4 and frames[0].height > 96, 'two captioned panels'
    with zipfile.ZipFile(masks) as archive:
        names = sorted(archive.namelist())
        first = Image.open(io.BytesIO(archive.read(names[0])))
    folders = sorted({name.split('/')[0] for name in names})
    assert folders == ['01_' + texts[0].replace(' ', '_'), '02_' + texts[1].replace(' ', '_')]
    assert len(names) == 48 and names[0].endswith('/00000.png') and names[23].endswith('/00023.png')
    assert first.size == (128, 96) and set(np.unique(np.asarray(first))) <= {0, 255}

    again, _, _ = segmenter.segment(video, texts[0], progress=ignore_progress)
    assert not Path(overlay).exists() and Path(again).exists(), 'only the latest result stays on disk'


def test_what_the_user_gets_wrong_is_said_in_the_page(small_checkpoint, example, tmp_path):
    segmenter = small_segmenter(small_checkpoint, tmp_path, '--short_side', '96')
    with pytest.raises(gr.Error, match='No video: upload one'):
        segmenter.segment(None, 'the red circle', progress=ignore_progress)
    with pytest.raises(gr.Error, match='No sentence: write one'):
        segmenter.segment(example[0], ' \n \n', progress=ignore_progress)
    broken = tmp_path / 'holiday.mp4'
    broken.write_bytes(b'not a video at all')
    with pytest.raises(gr.Error, match=r'holiday.mp4 cannot be read as a video .*upload an mp4, webm or mov'):
        segmenter.segment(str(broken), 'the red circle', progress=ignore_progress)


def test_without_a_checkpoint_one_line_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv('QUICKSTART_DIR', str(tmp_path / 'no_quickstart'))
    with pytest.raises(SystemExit) as ended:
        app.main(['--device', 'cpu', '--example_dir', str(tmp_path / 'example')])
    message = str(ended.value.code)
    assert '\n' not in message and message.startswith('app.py: no checkpoint: pass --resume CHECKPOINT')
    assert 'bash scripts/quickstart.sh' in message and str(tmp_path / 'no_quickstart') in message
    with pytest.raises(SystemExit, match=f'app.py: checkpoint not found: {tmp_path}/missing.pth'):
        app.main(['--device', 'cpu', '--resume', str(tmp_path / 'missing.pth')])


def test_the_checkpoint_supplies_the_options_not_given(monkeypatch, tmp_path, caplog):
    """A training checkpoint records its options (main.py saves `args`): the app rebuilds the model from it,
    e.g. the quick start's, which it takes when --resume is not given; flags on the command line win."""
    trained = train_main.get_parser().parse_args([*SMALL_MODEL, *offline_flags(), '--num_queries', '1',
                                                  '--short_side', '96'])
    torch.manual_seed(0)
    model, _, _ = build_model(trained)
    path = tmp_path / 'quickstart' / 'train' / 'checkpoint.pth'
    path.parent.mkdir(parents=True)
    torch.save({'model': model.state_dict(), 'args': trained, 'epoch': 0}, path)
    monkeypatch.setenv('QUICKSTART_DIR', str(tmp_path / 'quickstart'))

    parser = app.get_parser()
    argv = ['--device', 'cpu', '--short_side', '120']
    args = parser.parse_args(argv)
    checkpoint = app.checkpoint_with_options(args, parser, app.opts.given_options(parser, argv))
    assert args.resume == str(path)
    assert (args.backbone, args.hidden_dim, args.num_queries, args.dec_layers) == ('resnet18', 64, 1, 2)
    assert args.short_side == 120 and args.text_encoder == trained.text_encoder
    with caplog.at_level('INFO'):
        loaded = load_inference_model(args, torch.device('cpu'), checkpoint)
    assert torch.equal(loaded.query_embed.weight, model.query_embed.weight)
    assert f'loaded {path} into BIFIT with a resnet18 backbone: all {len(model.state_dict())} weights match ' \
           '(trained for 1 epoch)' in caplog.text


def chromium_and_driver():
    """(chromium, chromedriver) paths, or a skip naming what is missing."""
    pytest.importorskip('selenium', reason='the browser test needs Selenium: pip install -r requirements-app.txt')
    found = {name: shutil.which(name) for name in ('chromium', 'chromedriver')}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(f'no {" and ".join(missing)}: apt-get install chromium chromium-driver (.ci/run does, as root)')
    return found['chromium'], found['chromedriver']


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f'app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}')
        with socket.socket() as probe:
            if probe.connect_ex(('127.0.0.1', port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f'app.py did not serve on port {port} within {timeout} s:\n{log.read_text()[-3000:]}')


@pytest.mark.slow
def test_in_a_browser(small_checkpoint, example, tmp_path, monkeypatch):
    """app.py on a loopback port, driven by headless Chromium: upload a video, type a sentence, press Segment;
    an overlay video comes back and plays (duration, decoded size). Screenshots: tmp_path/page_*.png."""
    chromium, chromedriver = chromium_and_driver()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv('SE_OFFLINE', 'true')  # Selenium Manager: never download a browser or driver
    port = free_port()
    log = tmp_path / 'app.log'
    environment = dict(os.environ, OMP_NUM_THREADS='1', GRADIO_TEMP_DIR=str(tmp_path / 'gradio'))
    with log.open('w') as output:
        server = subprocess.Popen([sys.executable, 'app.py', *SMALL_MODEL, *offline_flags(), '--resume',
                                   str(small_checkpoint), '--short_side', '96', '--port', str(port),
                                   '--example_dir', str(tmp_path / 'example')],
                                  cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--window-size=1400,1000',
                 f'--user-data-dir={tmp_path / "chromium_profile"}'):
        options.add_argument(flag)
    driver = None
    try:
        wait_for_port(port, server, log)
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        driver.get(f'http://127.0.0.1:{port}/')
        upload = WebDriverWait(driver, 120).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, '#video input[type=file]'))[0]
        driver.save_screenshot(str(tmp_path / 'page_1_loaded.png'))
        upload.send_keys(example[0])
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#video video'))
        driver.find_element(By.CSS_SELECTOR, '#sentences textarea').send_keys(example[1].splitlines()[0])
        driver.save_screenshot(str(tmp_path / 'page_2_uploaded.png'))
        driver.find_element(By.CSS_SELECTOR, '#segment').click()
        WebDriverWait(driver, 300).until(lambda d: d.execute_script(
            "const v = document.querySelector('#overlay video'); return v !== null && v.readyState >= 2;"))
        duration, width, height, source = driver.execute_script(
            "const v = document.querySelector('#overlay video'); return [v.duration, v.videoWidth, v.videoHeight, v.src];")
        driver.save_screenshot(str(tmp_path / 'page_3_result.png'))
        status = driver.find_element(By.CSS_SELECTOR, '#status').text
        masks = driver.find_element(By.CSS_SELECTOR, '#masks a').get_attribute('href')
        downloads = [urllib.request.urlopen(url, timeout=60).read() for url in (source, masks)]
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=60)
    print(f'screenshots: {tmp_path}/page_*.png')
    assert duration == pytest.approx(24 / 8, abs=0.2) and (width, height) == (128, 96), 'the overlay plays'
    assert source.endswith('overlay.mp4') and masks.endswith('masks.zip') and status.startswith('24 frames, 1 sentence(s)')
    with av.open(io.BytesIO(downloads[0])) as container:
        assert container.streams.video[0].frames == 24
    assert len(zipfile.ZipFile(io.BytesIO(downloads[1])).namelist()) == 24
    for name in ('page_1_loaded', 'page_2_uploaded', 'page_3_result'):
        screenshot = np.asarray(Image.open(tmp_path / f'{name}.png').convert('RGB'))
        assert screenshot.shape[1] >= 1000 and screenshot.std() > 10, f'{name}.png shows the page'

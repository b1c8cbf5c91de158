"""Reading frames (folders of images or video files) and writing results (mp4, gif, PNG folders)."""
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch import Tensor

from util.cli import UserError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
# The evaluation protocol: frames resized to this short side, then normalised with ImageNet's mean and std
# (as the backbones' pretraining; the training transforms normalise alike).
EVAL_SHORT_SIDE = 360
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def inference_transform(short_side: int = EVAL_SHORT_SIDE) -> T.Compose:
    """The evaluation protocol's frame transform: short side resized to 360, normalised."""
    return T.Compose([T.Resize(short_side), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def frames_to_clip(frames: Sequence[Image.Image], short_side: int = EVAL_SHORT_SIDE,
                   size: Optional[Tuple[int, int]] = None) -> Tensor:
    """PIL frames -> the normalised clip `[T, 3, h, w]` the model takes, short side `short_side`; a frame of
    another size than `size` (W, H; default: the first frame's) is first resized to it (bilinear)."""
    transform = inference_transform(short_side)
    size = size or frames[0].size
    return torch.stack([transform(frame if frame.size == size else frame.resize(size, Image.BILINEAR))
                        for frame in frames])


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert('RGB')
    except OSError as error:
        raise UserError(f'cannot read the image {path} ({error})') from error


class FrameSource:
    """The frames of a video file or of a folder of images (sorted by name), read chunk by chunk;
    `frame_size`: the first frame's (W, H), which the network sees every frame at."""

    def __init__(self, path):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.files:
                raise UserError(f'{self.path} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
            self.fps = None
            self.num_frames = len(self.files)
        elif self.path.is_file():
            self.files = None
            capture = self._open_video()
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and fps > 0 else None
            self.num_frames = 0
            while capture.grab():
                self.num_frames += 1
            capture.release()
            if self.num_frames == 0:
                raise UserError(f'{self.path}: no frame could be decoded (is it a video file?)')
        else:
            raise FileNotFoundError(f'{self.path} does not exist (expected a video file or a folder of frames)')
        self.frame_size = next(self.chunks(1))[0].size

    def _open_video(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise UserError(f'{self.path} cannot be decoded as a video (OpenCV could not open it)')
        return capture

    def __len__(self) -> int:
        return self.num_frames

    @property
    def names(self) -> List[str]:
        """A name per frame: the image file stem, or the frame index (5 digits) for videos."""
        if self.files is not None:
            return [p.stem for p in self.files]
        return [f'{i:05d}' for i in range(self.num_frames)]

    def chunks(self, size: int) -> Iterator[List[Image.Image]]:
        """Consecutive lists of at most `size` RGB frames, covering the whole video in order."""
        if self.files is not None:
            for start in range(0, len(self.files), size):
                yield [open_image(p) for p in self.files[start:start + size]]
            return
        capture = self._open_video()
        chunk = []
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                chunk.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
                if len(chunk) == size:
                    yield chunk
                    chunk = []
        finally:
            capture.release()
        if chunk:
            yield chunk


def browser_video_encoder():
    """PyAV (`av`, requirements-app.txt) when it is installed: it writes H.264 mp4 files that browsers
    play; None otherwise (OpenCV then writes MPEG-4 Part 2, which video players play but browsers do not)."""
    try:
        import av
    except ImportError:
        return None
    return av if 'libx264' in av.codecs_available else None


class FrameWriter:
    """Writes RGB frames to an .mp4/.avi video, an animated .gif, or a folder of PNGs (any other path).

    An .mp4 is H.264 (yuv420p, odd sizes padded by one black row or column; playable in browsers) when
    PyAV is installed, OpenCV's MPEG-4 otherwise."""

    def __init__(self, path, fps: float = 10.0, names: Sequence[str] = None):
        self.path = Path(path)
        self.fps = fps
        self.names = names
        self.kind = {'.mp4': 'video', '.avi': 'video', '.gif': 'gif'}.get(self.path.suffix.lower(), 'folder')
        self.count = 0
        self.video = None
        self.container = None
        self.gif_frames: List[Image.Image] = []
        self.size = None
        (self.path if self.kind == 'folder' else self.path.parent).mkdir(parents=True, exist_ok=True)

    def write(self, frame: Image.Image) -> None:
        """Add `frame`; in a video or gif, a frame of another size than the first is resized to the first's."""
        if self.kind != 'folder':
            self.size = self.size or frame.size
            frame = frame if frame.size == self.size else frame.resize(self.size, Image.BILINEAR)
        if self.kind == 'folder':
            name = self.names[self.count] if self.names else f'{self.count:05d}'
            frame.save(self.path / f'{name}.png')
        elif self.kind == 'gif':
            self.gif_frames.append(frame.convert('P', palette=Image.Palette.ADAPTIVE))
        elif self.path.suffix.lower() == '.mp4' and (self.container is not None or browser_video_encoder()):
            self._write_h264(frame)
        else:
            if self.video is None:
                fourcc = cv2.VideoWriter_fourcc(*('mp4v' if self.path.suffix.lower() == '.mp4' else 'MJPG'))
                self.video = cv2.VideoWriter(str(self.path), fourcc, self.fps, frame.size)
                if not self.video.isOpened():
                    raise RuntimeError(f'OpenCV cannot write {self.path}: it has no {self.path.suffix} encoder here '
                                       f'(write a .gif or a folder of PNGs, or install PyAV: requirements-app.txt)')
            self.video.write(cv2.cvtColor(np.asarray(frame.convert('RGB')), cv2.COLOR_RGB2BGR))
        self.count += 1

    def _write_h264(self, frame: Image.Image) -> None:
        if self.container is None:
            av = browser_video_encoder()
            self.container = av.open(str(self.path), 'w', options={'movflags': '+faststart'})
            self.stream = self.container.add_stream('libx264', rate=Fraction(self.fps).limit_denominator(1001))
            self.stream.width, self.stream.height = (size + size % 2 for size in frame.size)
            self.stream.pix_fmt = 'yuv420p'
            self.frame_type = av.VideoFrame
        padded = Image.new('RGB', (self.stream.width, self.stream.height))
        padded.paste(frame.convert('RGB'), (0, 0))
        for packet in self.stream.encode(self.frame_type.from_image(padded)):
            self.container.mux(packet)

    def close(self) -> None:
        if self.video is not None:
            self.video.release()
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
        if self.gif_frames:
            self.gif_frames[0].save(self.path, save_all=True, append_images=self.gif_frames[1:],
                                    duration=int(1000 / self.fps), loop=0)

    def __enter__(self) -> 'FrameWriter':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

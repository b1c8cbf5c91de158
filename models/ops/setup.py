"""Builds the CUDA extension of multi-scale deformable attention, importable as `models.ops._C`.

    cd models/ops && python setup.py build_ext --inplace

CUDA toolkit: `CUDA_HOME` (or `CUDA_PATH`) when set; otherwise the toolkit of the `nvcc` on PATH,
following symlinks and wrapper scripts (`exec /usr/local/cuda-X/bin/nvcc "$@"`) to the real
binary; otherwise /usr/local/cuda. Architectures: `TORCH_CUDA_ARCH_LIST` when set; otherwise
every one of 7.0 to 9.0 that this nvcc accepts (CUDA 13 dropped 7.0), plus PTX of the newest so
that later GPUs can JIT-compile it. `MAX_JOBS` bounds the parallel compile jobs (ninja).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
PREFERRED_ARCHS = ('7.0', '7.5', '8.0', '8.6', '8.9', '9.0')
WRAPPER_HOPS = 8


def is_cuda_toolkit(home: Path) -> bool:
    """True when `home` holds nvcc and the CUDA runtime headers."""
    return (home / 'bin' / 'nvcc').is_file() and (home / 'include' / 'cuda_runtime.h').is_file()


def real_nvcc(nvcc: Path) -> Path:
    """The nvcc binary behind `nvcc`, following symlinks and the nvcc paths wrapper scripts name."""
    nvcc = nvcc.resolve()
    for _ in range(WRAPPER_HOPS):
        with open(nvcc, 'rb') as file:
            if file.read(2) != b'#!':
                return nvcc
        named = re.findall(r'[^\s\'"`=:;]*/nvcc\b', nvcc.read_text(errors='replace'))
        targets = [Path(path).resolve() for path in named if Path(path).is_file()]
        targets = [target for target in targets if target != nvcc]
        if not targets:
            return nvcc
        nvcc = targets[0]
    return nvcc


def find_cuda_home() -> Path:
    """The CUDA toolkit to build with; exits with an explanation when there is none."""
    explicit = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    if explicit:
        if not is_cuda_toolkit(Path(explicit)):
            sys.exit(f'CUDA_HOME={explicit} is not a CUDA toolkit (it needs bin/nvcc and '
                     'include/cuda_runtime.h): point CUDA_HOME at the toolkit root or unset it')
        return Path(explicit)
    nvcc_on_path = shutil.which('nvcc')
    if nvcc_on_path:
        home = real_nvcc(Path(nvcc_on_path)).parent.parent
        if is_cuda_toolkit(home):
            return home
    default = Path('/usr/local/cuda')
    if is_cuda_toolkit(default):
        return default
    sys.exit('no CUDA toolkit found (no usable nvcc on PATH, no /usr/local/cuda): install the CUDA '
             'toolkit matching torch.version.cuda or set CUDA_HOME; without the extension the '
             'PyTorch implementation of deformable attention is used')


def default_arch_list(nvcc: Path) -> str:
    """The PREFERRED_ARCHS that `nvcc` can compile for, e.g. '7.5;8.0;8.6;8.9;9.0+PTX'."""
    listed = subprocess.run([str(nvcc), '--list-gpu-arch'], capture_output=True, text=True,
                            check=True).stdout.split()
    archs = [arch for arch in PREFERRED_ARCHS if 'compute_' + arch.replace('.', '') in listed]
    if not archs:
        sys.exit(f'{nvcc} supports none of the architectures {", ".join(PREFERRED_ARCHS)}: '
                 'set TORCH_CUDA_ARCH_LIST')
    return ';'.join(archs) + '+PTX'


def main() -> None:
    cuda_home = find_cuda_home()
    os.environ['CUDA_HOME'] = str(cuda_home)
    if not os.environ.get('TORCH_CUDA_ARCH_LIST'):
        os.environ['TORCH_CUDA_ARCH_LIST'] = default_arch_list(cuda_home / 'bin' / 'nvcc')
    print(f'CUDA_HOME={cuda_home} TORCH_CUDA_ARCH_LIST={os.environ["TORCH_CUDA_ARCH_LIST"]}')
    # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    os.chdir(HERE)
    setup(
        name='bifit_ms_deform_attn',
        ext_modules=[CUDAExtension(
            name='_C',
            sources=['src/ms_deform_attn.cpp', 'src/ms_deform_attn_cuda.cu'],
            extra_compile_args={'cxx': ['-O3'], 'nvcc': ['-O3']},
        )],
        cmdclass={'build_ext': BuildExtension},
    )


if __name__ == '__main__':
    main()

"""Segment one picture too large to hold twice in memory with Dask: ``map_overlap(Segmenter)`` over chunks.

    pip install "pspnet-lib[dask]"
    python examples/scale/dask_predict.py big.npy --weights pspnet_r50-d8_potsdam-512x512-80k --chunk 1024 --overlap 128

The picture (an ``(H, W, C)`` ``.npy`` read lazily with ``np.load(mmap_mode="r")``, a Zarr or
HDF5 array, ...) is cut into ``--chunk`` squares; each is segmented with ``--overlap`` pixels of
its neighbours around it (PSPNet's context), and the overlap is trimmed from its mask. Dask's
workers (threads here; processes or a cluster with ``dask.distributed``) each load the weights
once. Without an input file, a synthetic picture (``--synthetic``, 3072 x 4096) is segmented.
"""

from __future__ import annotations

import argparse
import time

import dask.array as da
import numpy as np

from pspnet_lib import Segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("array", nargs="?", help="an (H, W, C) uint8 .npy file (default: a synthetic picture)")
    parser.add_argument("--weights", default="pspnet_r50-d8_potsdam-512x512-80k")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--out", default="mask.npy")
    parser.add_argument("--synthetic", default="3072x4096", help="HxW of the synthetic picture (without an input file)")
    args = parser.parse_args()

    if args.array:
        picture = np.load(args.array, mmap_mode="r")
    else:
        height, width = (int(v) for v in args.synthetic.split("x"))
        rng = np.random.default_rng(0)  # 32 x 32 blocks of random colours
        blocks = rng.integers(0, 256, (-(-height // 32), -(-width // 32), 3), dtype=np.uint8)
        picture = np.kron(blocks, np.ones((32, 32, 1), np.uint8))[:height, :width]
    image = da.from_array(picture, chunks=(args.chunk, args.chunk, picture.shape[2]))
    segmenter = Segmenter(args.weights, resize=False)  # each chunk at its own resolution
    mask = da.map_overlap(
        segmenter,
        image,
        depth=(args.overlap, args.overlap, 0),
        boundary="reflect",
        drop_axis=2,
        dtype=np.uint8,
        meta=np.empty((0, 0), np.uint8),
    )
    start = time.perf_counter()
    result = mask.compute()
    seconds = time.perf_counter() - start
    np.save(args.out, result)
    megapixels = picture.shape[0] * picture.shape[1] / 1e6
    print(
        f"Dask: {megapixels:.1f} Mpx in {image.numblocks[0] * image.numblocks[1]} chunks, {seconds:.1f} s "
        f"({megapixels / seconds:.2f} Mpx/s) -> {args.out}"
    )


if __name__ == "__main__":
    main()

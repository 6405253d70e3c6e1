"""Segment a folder of pictures with Ray Data: ``read_images`` -> ``map_batches(Segmenter)`` -> Parquet.

    pip install "pspnet-lib[ray]"
    python examples/scale/ray_predict.py photos/ --weights pspnet_r50-d8_ade20k --out masks/ --actors 4 [--gpus-per-actor 1]

``Segmenter`` is a callable class: Ray starts ``--actors`` actors, each loading the weights once,
and streams batches of decoded pictures (column ``image``) through them; the result keeps the
``path`` column and adds ``mask`` (H, W) uint8 per picture. On a cluster, call ``ray.init()``
with its address instead of a local one; with GPUs, pass ``--gpus-per-actor 1``. Each actor
holds a CPU: leave CPUs for the tasks that read and decode (with 2 CPUs and 2 actors the reads
never get one and the dataset stalls).
"""

from __future__ import annotations

import argparse
import time

import ray

from pspnet_lib import Segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--weights", default="pspnet_r50-d8_ade20k")
    parser.add_argument("--out", default="masks")
    parser.add_argument("--actors", type=int, default=1, help="actors, each with a model (leave CPUs for reading)")
    parser.add_argument("--gpus-per-actor", type=float, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster this example starts")
    args = parser.parse_args()

    ray.init(num_cpus=args.cpus, include_dashboard=False)
    start = time.perf_counter()
    pictures = ray.data.read_images(args.folder, include_paths=True, mode="RGB")
    masks = pictures.map_batches(
        Segmenter,
        fn_constructor_kwargs={"weights": args.weights},
        batch_size=args.batch_size,
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_gpus=args.gpus_per_actor,
    )
    masks.drop_columns(["image"]).write_parquet(args.out)
    seconds = time.perf_counter() - start
    count = ray.data.read_parquet(args.out).count()
    print(f"Ray Data: {count} pictures in {seconds:.1f} s ({count / seconds:.2f} pictures/s) -> {args.out}")


if __name__ == "__main__":
    main()

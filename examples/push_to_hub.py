"""Save a (fine-tuned) PSPNet as safetensors + config + model card, and optionally push it to the Hub.

    # local only: writes config.json, model.safetensors and README.md (the model card) to --out
    python examples/push_to_hub.py --weights runs/finetune/model --out my-pspnet

    # publish (needs a Hugging Face token with write access: HF_TOKEN or `hf auth login`)
    python examples/push_to_hub.py --weights runs/finetune/model --repo-id you/pspnet-roads --push

Nothing is uploaded without ``--push``, and ``--push`` without a token stops with a message.
Anyone can then load the model with ``pspnet_lib.load_pretrained("hf-hub:you/pspnet-roads")``
or ``pspnet predict ... --weights hf-hub:you/pspnet-roads``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import pspnet_lib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights",
        required=True,
        help="a save_pretrained folder (e.g. a training run's model/), zoo name or checkpoint",
    )
    parser.add_argument("--out", type=Path, default=Path("pspnet-export"), help="local folder to write")
    parser.add_argument("--repo-id", help="Hub repository, e.g. you/pspnet-roads (needed with --push)")
    parser.add_argument(
        "--push", action="store_true", help="upload to the Hub (otherwise only the local folder is written)"
    )
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN or the saved login)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = pspnet_lib.load_pretrained(args.weights).eval()
    model.save_pretrained(args.out)
    logging.info("wrote %s: %s", args.out, ", ".join(sorted(p.name for p in args.out.iterdir())))

    if not args.push:
        logging.info("not pushing (pass --push --repo-id you/name to publish)")
        return 0
    if not args.repo_id:
        logging.error("--push needs --repo-id (e.g. --repo-id you/pspnet-roads)")
        return 2
    from huggingface_hub import get_token

    token = args.token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        logging.error("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access)")
        return 2
    url = model.push_to_hub(args.repo_id, token=token, private=args.private)
    logging.info("pushed to %s", url)
    return 0


if __name__ == "__main__":
    sys.exit(main())

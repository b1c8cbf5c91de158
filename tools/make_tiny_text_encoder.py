"""A tiny RoBERTa (random weights) and its byte-level BPE tokenizer, trained on the expressions of
local datasets: a stand-in for `roberta-base` on machines that cannot download it (quick start, CPU
experiments). Use it with `--text_encoder DIR`.

    python tools/make_tiny_text_encoder.py --out data/tiny_roberta --datasets data/synthetic/ref-shapes
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

SPECIAL_TOKENS = ['<s>', '<pad>', '</s>', '<unk>', '<mask>']
BASIC_WORDS = ('a an the on in at of to with and is are that which who left right top bottom front back '
               'moving moves walking running person man woman dog cat car').split()


def expressions(roots: List[Path]) -> Iterator[str]:
    """Every expression of the Ref-YouTube-VOS-layout meta files under `roots`."""
    for root in roots:
        for meta_file in sorted(root.glob('meta_expressions/*/meta_expressions.json')):
            for video in json.loads(meta_file.read_text())['videos'].values():
                for expression in video['expressions'].values():
                    yield expression['exp']


def make_tiny_text_encoder(out: Path, roots: List[Path], vocab_size: int = 512, hidden_size: int = 128,
                           layers: int = 2, seed: int = 0) -> Path:
    corpus = list(expressions(roots)) + BASIC_WORDS
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        vocab_file, merges_file = bpe.save_model(folder)
        tokenizer = RobertaTokenizer(vocab=vocab_file, merges=merges_file)
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                           num_attention_heads=4, intermediate_size=2 * hidden_size, max_position_embeddings=130,
                           type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    RobertaModel(config).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, type=Path, help='the folder to write (config, weights, tokenizer)')
    parser.add_argument('--datasets', nargs='*', type=Path, default=[],
                        help='Ref-YouTube-VOS-layout roots whose expressions train the tokenizer')
    parser.add_argument('--vocab_size', default=512, type=int)
    parser.add_argument('--hidden_size', default=128, type=int)
    parser.add_argument('--layers', default=2, type=int)
    args = parser.parse_args()
    missing = [str(root) for root in args.datasets if not root.is_dir()]
    if missing:
        sys.exit(f'not a folder: {", ".join(missing)}')
    out = make_tiny_text_encoder(args.out, args.datasets, args.vocab_size, args.hidden_size, args.layers)
    print(f'tiny text encoder written to {out} (use --text_encoder {out})')


if __name__ == '__main__':
    main()

"""A tiny RoBERTa (random weights) and its byte-level BPE tokenizer, trained on the expressions of
local datasets: a stand-in for `roberta-base` on machines that cannot download it (quick start, CPU
experiments). Use it with `--text_encoder DIR`.

    python tools/make_tiny_text_encoder.py --out data/tiny_roberta --datasets data/synthetic/ref-shapes

With `--roberta_base_sized --no_weights` it writes a stand-in of roberta-base's size (the tokenizer and the
config only: the model gets random weights when it is built), e.g. for `tools/benchmark.py`.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util.cli import run  # noqa: E402

SPECIAL_TOKENS = ['<s>', '<pad>', '</s>', '<unk>', '<mask>']
BASIC_WORDS = ('a an the on in at of to with and is are that which who left right top bottom front back '
               'moving moves walking running person man woman dog cat car').split()
# roberta-base's sizes: hidden size, layers, attention heads, feed-forward size, positions.
ROBERTA_BASE_SIZES = {'hidden_size': 768, 'layers': 12, 'heads': 12, 'intermediate_size': 3072,
                      'max_positions': 514}


def expressions(roots: List[Path]) -> Iterator[str]:
    """Every expression of the meta files under `roots`: Ref-YouTube-VOS layout
    (`meta_expressions/<split>/meta_expressions.json`) or MeViS layout (`<split>/meta_expressions.json`)."""
    for root in roots:
        for meta_file in sorted([*root.glob('meta_expressions/*/meta_expressions.json'),
                                 *root.glob('*/meta_expressions.json')]):
            for video in json.loads(meta_file.read_text())['videos'].values():
                for expression in video['expressions'].values():
                    yield expression['exp']


def make_tiny_text_encoder(out: Path, roots: List[Path], vocab_size: int = 512, hidden_size: int = 128,
                           layers: int = 2, heads: int = 4, intermediate_size: Optional[int] = None,
                           max_positions: int = 130, weights: bool = True, seed: int = 0) -> Path:
    """Write a RoBERTa tokenizer trained on the expressions under `roots`, its config and, with `weights`,
    random weights (seeded) into `out`."""
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
                           num_attention_heads=heads, intermediate_size=intermediate_size or 2 * hidden_size,
                           max_position_embeddings=max_positions, type_vocab_size=1,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    if weights:
        RobertaModel(config).save_pretrained(out)
    else:
        config.save_pretrained(out)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, type=Path, help='the folder to write (config, weights, tokenizer)')
    parser.add_argument('--datasets', nargs='*', type=Path, default=[],
                        help='Ref-YouTube-VOS-layout or MeViS-layout roots whose expressions train the tokenizer')
    parser.add_argument('--vocab_size', default=512, type=int)
    parser.add_argument('--hidden_size', default=128, type=int)
    parser.add_argument('--layers', default=2, type=int)
    parser.add_argument('--heads', default=4, type=int, help='attention heads')
    parser.add_argument('--intermediate_size', default=None, type=int, help='feed-forward size (default: 2 x hidden)')
    parser.add_argument('--max_positions', default=130, type=int, help='longest tokenized sentence + 2')
    parser.add_argument('--roberta_base_sized', action='store_true',
                        help="roberta-base's sizes (768 hidden, 12 layers and heads, 3072 feed-forward, 514 "
                             'positions) instead of the size options')
    parser.add_argument('--no_weights', action='store_true',
                        help='write the tokenizer and the config only: the model gets random weights when built '
                             '(or those of a BIFIT checkpoint)')
    args = parser.parse_args(argv)
    if args.roberta_base_sized:
        vars(args).update(ROBERTA_BASE_SIZES)
    missing = [str(root) for root in args.datasets if not root.is_dir()]
    if missing:
        sys.exit(f'not a folder: {", ".join(missing)}')
    out = make_tiny_text_encoder(args.out, args.datasets, args.vocab_size, args.hidden_size, args.layers, args.heads,
                                 args.intermediate_size, args.max_positions, weights=not args.no_weights)
    print(f'tiny text encoder written to {out} (use --text_encoder {out})')


if __name__ == '__main__':
    run(main, list)

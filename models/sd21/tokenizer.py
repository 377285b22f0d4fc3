"""The CLIP byte-pair tokenizer of OpenCLIP (and so of Stable Diffusion 2.x), offline.

The merges ship with the pack (``data/bpe_simple_vocab_16e6.txt.gz``, MIT, see the notice beside
it); nothing is downloaded. Prompts are cleaned as OpenCLIP does: ``ftfy.fix_text`` when ftfy is
installed (it only repairs mis-decoded Unicode, so plain prompts are unaffected without it), HTML
entities unescaped, whitespace collapsed, lower-cased. Sequences are ``<start> tokens <end>``, cut
to the context length (the last kept token becoming ``<end>``), padded with zeros (OpenCLIP pads
with 0, not with ``<end>`` as SD 1.x's tokenizer does). An empty prompt does not even read the file.
"""
from __future__ import annotations

import gzip
import html
import os
from functools import lru_cache

import torch

MERGES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "bpe_simple_vocab_16e6.txt.gz")
MERGE_COUNT = 49152 - 256 - 2  # merges used by CLIP: the vocabulary is 49408 entries
START_ID, END_ID = 49406, 49407  # the two special tokens follow 2 x 256 byte symbols and the merges
CONTEXT_LENGTH = 77


@lru_cache(maxsize=None)
def byte_symbols() -> dict[int, str]:
    """Each byte as a printable character: visible Latin-1 bytes stand for themselves, the others
    (controls, space, soft hyphen...) take the code points from 256 on, in byte order."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in visible}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clean(text: str) -> str:
    try:
        import ftfy
    except ImportError:
        ftfy = None
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class CLIPTokenizer:
    def __init__(self, merges_file: str = MERGES_FILE):
        self.merges_file = merges_file
        self._encoder: dict[str, int] | None = None
        self._ranks: dict[tuple[str, str], int] = {}
        self._cache: dict[str, list[str]] = {}

    def _load(self) -> None:
        import regex

        with gzip.open(self.merges_file, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")[1:MERGE_COUNT + 1]
        merges = [tuple(line.split()) for line in lines]
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<start_of_text>", "<end_of_text>"]
        self._encoder = {token: i for i, token in enumerate(vocab)}
        if (self._encoder["<start_of_text>"], self._encoder["<end_of_text>"]) != (START_ID, END_ID):
            raise ValueError(f"{self.merges_file}: not CLIP's merge list (vocabulary of {len(vocab)} entries)")
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._pattern = regex.compile(
            r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)

    def _bpe(self, word: str) -> list[str]:
        """Merge the symbols of one pre-token, lowest-ranked pair first, until no known pair is left."""
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda pair: self._ranks.get(pair, float("inf")))
            if best not in self._ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt, without the start/end tokens."""
        text = clean(text)
        if not text:
            return []
        if self._encoder is None:
            self._load()
        symbols = byte_symbols()
        ids = []
        for piece in self._pattern.findall(text):
            if piece in ("<start_of_text>", "<end_of_text>"):
                ids.append(self._encoder[piece])
                continue
            word = "".join(symbols[b] for b in piece.encode("utf-8"))
            ids.extend(self._encoder[p] for p in self._bpe(word))
        return ids

    def __call__(self, texts: str | list[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
        """``[N, context_length]`` int64 token ids."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [START_ID, *self.encode(text), END_ID]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = END_ID
            out[row, :len(ids)] = torch.tensor(ids)
        return out


@lru_cache(maxsize=1)
def default_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()

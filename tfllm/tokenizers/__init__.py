"""Tokenizers: train on text, save, load, and apply in-graph.

Four kinds behind one interface (`Tokenizer`), named by `data.tokenizer`:
`char`, `wordpiece`, `bpe` and `sentencepiece`. Ids 0-3 are `<pad>`, `<eos>`,
`<unk>` and `<mask>` for every kind. The kinds `tfllm import` brings with a
checkpoint keep the checkpoint's ids and are never trained: `gpt2_bpe`,
`llama3_bpe`, `qwen2_bpe`, `llama_sentencepiece` and `bert_wordpiece`.

```python
from tfllm.tokenizers import load_tokenizer, train_tokenizer

tokenizer = train_tokenizer("bpe", texts, vocab_size=4096)
tokenizer.save("runs/x/tokenizer")
ids = load_tokenizer("runs/x/tokenizer").tokenize(["def f(x):"])
```
"""

from tfllm.tokenizers.byte_pair_tokenizer import BytePairTokenizer
from tfllm.tokenizers.char_tokenizer import CharTokenizer
from tfllm.tokenizers.sentence_piece_tokenizer import SentencePieceTokenizer
from tfllm.tokenizers.tokenizer import EOS_ID
from tfllm.tokenizers.tokenizer import MASK_ID
from tfllm.tokenizers.tokenizer import PAD_ID
from tfllm.tokenizers.tokenizer import SPECIAL_TOKENS
from tfllm.tokenizers.tokenizer import UNK_ID
from tfllm.tokenizers.tokenizer import Tokenizer
from tfllm.tokenizers.tokenizer_registry import KINDS
from tfllm.tokenizers.tokenizer_registry import load_tokenizer
from tfllm.tokenizers.tokenizer_registry import train_tokenizer
from tfllm.tokenizers.word_piece_tokenizer import WordPieceTokenizer

__all__ = [
    "BytePairTokenizer",
    "CharTokenizer",
    "EOS_ID",
    "KINDS",
    "MASK_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "SentencePieceTokenizer",
    "Tokenizer",
    "UNK_ID",
    "WordPieceTokenizer",
    "load_tokenizer",
    "train_tokenizer",
]

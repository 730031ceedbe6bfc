"""`tfllm import` keeps a chat model's template, and `tfllm generate --chat` on the imported run
replies as `transformers` does: `generate` on `apply_chat_template`'s ids, greedy."""

import pytest

from tests.data.test_chat import QWEN2, byte_level, saved, tokenizers
from tests.huggingface.conftest import torch, transformers
from tfllm import cli
from tfllm.tokenizers.gpt2_tokenizer import PATTERNS

PROMPT = "What is 2+2?"


@pytest.fixture(scope="module")
def qwen2_chat(tmp_path_factory):
    """(directory, model, tokenizer): a tiny random Qwen2 chat checkpoint, its Qwen2-layout
    tokenizer ending turns with <|im_end|> (its end of text is <|endoftext|>) and Qwen2.5's template."""
    directory = tmp_path_factory.mktemp("qwen2_chat")
    model = byte_level(PATTERNS["qwen2"], ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    model.normalizer = tokenizers.normalizers.NFC()
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=model, eos_token="<|endoftext|>")
    _, tokenizer = saved(wrapped, directory, QWEN2, tokenizer_class="Qwen2Tokenizer", bos_token=None,
                         pad_token="<|endoftext|>")
    torch.manual_seed(0)
    lm = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, initializer_range=0.3,
        eos_token_id=tokenizer.eos_token_id)).eval()
    lm.save_pretrained(directory)
    return str(directory), lm, tokenizer


def test_generate_chat_on_an_imported_chat_model_replies_as_transformers(qwen2_chat, tmp_path, capsys):
    directory, model, tokenizer = qwen2_chat
    run_dir = tmp_path / "run"
    assert cli.main(["import", directory, "--run-dir", str(run_dir)]) == 0
    assert (run_dir / "tokenizer" / "chat_template.jinja").read_text() == QWEN2
    chat = [{"role": "user", "content": PROMPT}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                             eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")])
    want = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    capsys.readouterr()
    assert cli.main(["generate", "--run-dir", str(run_dir), "--chat", "--prompt", PROMPT,
                     "--strategy", "greedy", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out == want + "\n" + "-" * 40 + "\n"

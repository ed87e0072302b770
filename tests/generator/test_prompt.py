from __future__ import annotations

import random

import pytest

from ragtune.data.schema import Passage
from ragtune.generator.collator import pad_batch, raft_contexts
from ragtune.generator.config import PromptConfig, RaftConfig
from ragtune.generator.prompt import IGNORE_INDEX, PromptEncoder, user_message
from tests.conftest import tiny_llama

WORDS = (
    "system user assistant Passages Question Answer passages question answer you questions using only the numbered are given if do not contain say that "
    "what colour is ferry hull ivory amber it has an the sails at dawn from port lanmor boat [ ] 1 2 3 4 : . , ? "
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau"
)
GREEK = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
]


def passage(i: int, n_words: int) -> Passage:
    return Passage(f"p{i}", " ".join(GREEK[(i + j) % len(GREEK)] for j in range(n_words)))


@pytest.fixture(scope="module")
def tok():
    return tiny_llama(WORDS)[1]


def test_labels_cover_exactly_the_answer_and_end_of_turn(tok) -> None:
    enc = PromptEncoder(tok, PromptConfig(system="answer using only the passages ."), max_length=256)
    ex = enc.encode("what colour is the hull ?", [passage(0, 5), passage(1, 5)], "ivory")
    answer_ids = tok("ivory", add_special_tokens=False)["input_ids"]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert enc.end_ids == [end]
    assert ex.input_ids[ex.n_prompt :] == [*answer_ids, end]
    assert ex.labels == [IGNORE_INDEX] * ex.n_prompt + [*answer_ids, end]
    # The prompt is the chat template with the generation prompt: the answer follows it directly.
    rendered = tok.decode(ex.input_ids[: ex.n_prompt])
    assert rendered.startswith("<|im_start|> system") and rendered.rstrip().endswith("<|im_start|> assistant")
    assert "[ 1 ]" in rendered and "[ 2 ]" in rendered and ex.passages_kept == 2 and not ex.truncated


def test_truncation_trims_the_lowest_ranked_passage_first_and_keeps_question_and_answer(tok) -> None:
    full = PromptEncoder(tok, PromptConfig(system="say"), max_length=10_000)
    passages = [passage(0, 30), passage(1, 30), passage(2, 30)]
    whole = full.encode("what colour is the hull ?", passages, "ivory amber")
    limit = len(whole.input_ids) - 20  # 20 tokens too long: only the third passage is cut
    enc = PromptEncoder(tok, PromptConfig(system="say"), max_length=limit)
    ex = enc.encode("what colour is the hull ?", passages, "ivory amber")
    assert ex.truncated and ex.passages_kept == 3 and len(ex.input_ids) <= limit
    assert len(ex.input_ids) >= limit - 3  # the budget is used, not wasted
    text = tok.decode(ex.input_ids[: ex.n_prompt])
    assert passages[0].text in text and passages[1].text in text and passages[2].text not in text
    assert "what colour is the hull ?" in text
    assert ex.input_ids[ex.n_prompt :] == whole.input_ids[whole.n_prompt :]  # the answer is whole
    # A tighter budget drops the third passage entirely and cuts the second.
    tight = PromptEncoder(tok, PromptConfig(system="say"), max_length=limit - 40).encode(
        "what colour is the hull ?", passages, "ivory amber"
    )
    assert tight.passages_kept == 2 and passages[0].text in tok.decode(tight.input_ids)


def test_no_answer_token_left_is_an_error(tok) -> None:
    enc = PromptEncoder(tok, PromptConfig(system="say"), max_length=12)
    with pytest.raises(ValueError, match="no answer token would be left"):
        enc.encode("what colour is the hull of the ferry that sails at dawn ?", [passage(0, 5)], "ivory")
    with pytest.raises(ValueError, match="the answer is empty"):
        PromptEncoder(tok, PromptConfig(), max_length=100).encode("what ?", [], "  ")


def test_max_passages_and_no_template_format(tok) -> None:
    enc = PromptEncoder(tok, PromptConfig(max_passages=1), max_length=500)
    assert enc.encode("what ?", [passage(0, 3), passage(1, 3)], "ivory").passages_kept == 1
    _, base_tok = tiny_llama(WORDS, chat_template=None)
    plain = PromptEncoder(base_tok, PromptConfig(system="say"), max_length=500)
    assert plain.render("what ?", [passage(0, 2)]).endswith("Question: what ?\n\nAnswer:")
    assert plain.end_ids == [base_tok.eos_token_id]
    assert user_message("q", []) == "Question: q"


def test_raft_sampling_rate_and_targets() -> None:
    gold = [Passage("g", "gold")]
    distractors = [Passage(f"d{i}", "x") for i in range(5)] + [Passage("g", "gold")]
    rng = random.Random(0)
    cfg = RaftConfig(enabled=True, p_gold=0.7, num_distractors=3)
    draws = [raft_contexts(gold, distractors, "ivory", "NONE", cfg, rng) for _ in range(2000)]
    rate = sum(shown for _, _, shown in draws) / len(draws)
    assert abs(rate - 0.7) < 0.03
    for passages, target, shown in draws:
        ids = [p.id for p in passages]
        assert ids.count("g") == (1 if shown else 0)  # a gold passage listed as distractor is skipped
        assert len(ids) == (4 if shown else 3) and target == ("ivory" if shown else "NONE")
    again = [raft_contexts(gold, distractors, "ivory", "NONE", cfg, random.Random(0)) for _ in range(1)]
    assert again[0] == draws[0]


def test_pad_batch_masks_padding_and_refuses_an_all_masked_batch(tok) -> None:
    enc = PromptEncoder(tok, PromptConfig(), max_length=200)
    a = enc.encode("what ?", [passage(0, 3)], "ivory")
    b = enc.encode("what colour is the hull ?", [passage(1, 9)], "amber ivory")
    batch = pad_batch([a, b], pad_id=tok.pad_token_id)
    width = max(len(a.input_ids), len(b.input_ids))
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"].sum(1).tolist() == [len(a.input_ids), len(b.input_ids)]
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == (len(a.input_ids) - a.n_prompt) + (
        len(b.input_ids) - b.n_prompt
    )
    from ragtune.generator.prompt import EncodedExample

    masked = EncodedExample([1, 2], [IGNORE_INDEX, IGNORE_INDEX], 2, 0, False)
    with pytest.raises(ValueError, match="every label is masked"):
        pad_batch([masked], pad_id=0)

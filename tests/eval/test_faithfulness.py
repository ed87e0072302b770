"""Faithfulness scorers: lexical support, AUROC, the PMI score and the LM log-likelihood behind it."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from ragtune.eval.faithfulness import (
    auroc,
    content_tokens,
    faithfulness_prompt,
    lexical_faithfulness,
    lexically_supported,
    likelihood_faithfulness,
)

PASSAGE = (
    "Pablo Trapero (born 4 October 1971) is an Argentine film director. Aleksander Ford was born in 1908."
)


# --- lexical -------------------------------------------------------------------------------------


def test_content_tokens_drop_stopwords_fold_case_accents_and_split_glued_sentences() -> None:
    assert content_tokens("The Rhöner band was in the 19th century.First for Women") == [
        "rhoner", "band", "19", "th", "century", "first", "women",
    ]  # fmt: skip
    assert content_tokens("It is 6.213 km long, not 1,000") == ["6.213", "km", "long", "not", "1,000"]
    assert content_tokens("Yes, it is.") == []


def test_lexical_faithfulness_full_support_is_one() -> None:
    assert lexical_faithfulness("Aleksander Ford", [PASSAGE]) == 1.0
    assert lexical_faithfulness("an Argentine film director", [PASSAGE]) == 1.0
    # support may come from any context, but a bigram must sit inside one context
    assert lexical_faithfulness("Argentine film", ["nothing here", "an Argentine film"]) == 1.0
    assert lexical_faithfulness("film born", ["Argentine film", "born in 1908"]) == pytest.approx(0.5)


def test_lexical_faithfulness_partial_and_unsupported() -> None:
    # content tokens: mumbai, financial, capital, india -> none in the passage
    assert lexical_faithfulness("Mumbai, the financial capital of India.", [PASSAGE]) == 0.0
    # pablo, trapero, born, first: unigrams 3/4; bigrams (pablo trapero) and (trapero born) yes,
    # (born first) no -> 2/3; score (3/4 + 2/3) / 2
    score = lexical_faithfulness("Pablo Trapero was born first.", [PASSAGE])
    assert score == pytest.approx((3 / 4 + 2 / 3) / 2)
    # every word supported but recombined: unigrams 1, bigram (ford, argentine) unsupported -> 0.5
    assert lexical_faithfulness("Ford Argentine", [PASSAGE]) == pytest.approx(0.5)
    assert lexical_faithfulness("Trapero", []) == 0.0


def test_lexical_faithfulness_empty_answer_and_bounds() -> None:
    assert lexical_faithfulness("", [PASSAGE]) == 1.0
    assert lexical_faithfulness("yes", [PASSAGE]) == 1.0
    answers = ["Aleksander Ford", "Mumbai", "Pablo Trapero was born in 1971 in Argentina", "born director"]
    for answer in answers:
        assert 0.0 <= lexical_faithfulness(answer, [PASSAGE]) <= 1.0


def test_lexically_supported() -> None:
    assert lexically_supported("Pablo Trapero was born first?", [PASSAGE]) is False  # "first" missing
    assert lexically_supported("Pablo Trapero was born in 1908.", [PASSAGE]) is True  # wrong, yet supported
    assert lexically_supported("Ford Argentine", [PASSAGE]) is True
    assert lexically_supported("Mumbai", [PASSAGE]) is False
    assert lexically_supported("", [PASSAGE]) is True


# --- AUROC ---------------------------------------------------------------------------------------


def test_auroc_hand_computed_with_ties() -> None:
    labels = [1, 1, 1, 0, 0]
    scores = [0.9, 0.5, 0.3, 0.5, 0.1]
    # pairs (pos, neg): 0.9>0.5, 0.9>0.1, 0.5=0.5 (0.5), 0.5>0.1, 0.3<0.5 (0), 0.3>0.1 -> 4.5 / 6
    assert auroc(labels, scores) == pytest.approx(4.5 / 6)
    assert auroc([1, 0], [1.0, 0.0]) == 1.0
    assert auroc([1, 0], [0.0, 1.0]) == 0.0
    assert auroc([1, 0, 1, 0], [0.2, 0.2, 0.2, 0.2]) == 0.5


def test_auroc_matches_sklearn_when_installed() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    labels = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1]
    scores = [0.3, 0.3, 0.8, 0.1, 0.5, 0.2, 0.5, 0.9, 0.7, 0.1, 0.3, 0.3]
    assert auroc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))


def test_auroc_rejects_one_class_and_nan() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auroc([1, 0], [float("nan"), 0.2])


# --- PMI score with a stand-in log-likelihood ----------------------------------------------------


def _fake_loglik(rate_with: float, rate_without: float):
    """Every answer word costs ``rate_with`` nats given passages and ``rate_without`` without."""

    calls: list[list[tuple[str, str]]] = []

    def loglik(pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
        calls.append(pairs)
        out = []
        for prompt, answer in pairs:
            n = len(answer.split())
            rate = rate_with if "Passage 1:" in prompt else rate_without
            out.append((rate * n, n))
        return out

    loglik.calls = calls  # type: ignore[attr-defined]
    return loglik


def test_likelihood_faithfulness_is_sigmoid_of_per_token_pmi_and_length_free() -> None:
    loglik = _fake_loglik(rate_with=-1.0, rate_without=-3.0)
    answers = ["Ford", "Aleksander Ford was born in 1908 in Kielce"]
    scores = likelihood_faithfulness(answers, [[PASSAGE]] * 2, ["Who?", "Who?"], loglik)
    expected = 1 / (1 + math.exp(-2.0))  # pmi = -1 - (-3) = 2 nats per token
    assert scores == pytest.approx([expected, expected])  # length does not move the score
    assert len(loglik.calls) == 1 and len(loglik.calls[0]) == 4  # one batched call
    assert loglik.calls[0][0] == (faithfulness_prompt("Who?", [PASSAGE]), "Ford")
    assert loglik.calls[0][2] == (faithfulness_prompt("Who?", None), "Ford")

    worse = likelihood_faithfulness(["Ford"], [[PASSAGE]], None, _fake_loglik(-3.0, -1.0), scale=0.5)
    assert worse == pytest.approx([1 / (1 + math.exp(1.0))])  # pmi = -2, scaled by 0.5

    conditional = likelihood_faithfulness(
        ["a b"], [[PASSAGE]], ["q"], _fake_loglik(-0.5, -9.0), mode="conditional"
    )
    assert conditional == pytest.approx([math.exp(-0.5)])


def test_faithfulness_prompt_numbers_passages() -> None:
    prompt = faithfulness_prompt("Who?", ["one", "two"])
    assert (
        prompt
        == "Answer the question using the passages.\n\nPassage 1: one\n\nPassage 2: two\n\nQuestion: Who?"
    )
    assert faithfulness_prompt("Who?", []) == "Answer the question.\n\nQuestion: Who?"


def test_eval_module_does_not_import_torch() -> None:
    code = (
        "import ragtune.eval.faithfulness, sys\n"
        "for name in ('torch', 'transformers', 'ragtune.generator'):\n"
        "    assert name not in sys.modules, name\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# --- AnswerLikelihood on a tiny random Llama -----------------------------------------------------

from tests.conftest import CHATML  # noqa: E402

WORDS = "user assistant system who was born first pablo trapero aleksander ford in 1908 1971 passage question"


def _tiny_lm(chat_template: str | None = CHATML):
    torch = pytest.importorskip("torch")
    from tests.conftest import tiny_llama

    model, tokenizer = tiny_llama(WORDS, chat_template)
    return torch, model.eval(), tokenizer


PAIRS = [
    ("who was born first pablo trapero or aleksander ford", "aleksander ford"),
    ("passage 1908 question who", "ford was born in 1908 in passage"),
    ("question", "trapero"),
]


def _manual(torch, model, ids: list[int], n_prompt: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) over t >= n_prompt, from one unpadded forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()  # (T, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    return float(sum(logprobs[t - 1, ids[t]] for t in range(n_prompt, len(ids))))


def test_answer_likelihood_scores_only_continuation_with_exact_chat_boundary() -> None:
    from ragtune.generator.likelihood import AnswerLikelihood

    torch, model, tokenizer = _tiny_lm()
    scorer = AnswerLikelihood(model, tokenizer, batch_size=1, precision="fp32")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert scorer.end_ids == [end]

    prompt, answer = PAIRS[0]
    ids, n_prompt = scorer.encode(prompt, answer)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    assert ids[:n_prompt] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ids[n_prompt:] == [*tokenizer.convert_tokens_to_ids(["aleksander", "ford"]), end]
    # the whole sequence is what the template renders for the full conversation
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], tokenize=False
    )
    assert ids == tokenizer(full, add_special_tokens=False)["input_ids"][: len(ids)]

    results = scorer(PAIRS)
    for (prompt, answer), (total, n) in zip(PAIRS, results):
        ids, n_prompt = scorer.encode(prompt, answer)
        assert n == len(answer.split()) + 1  # answer words + end of turn
        assert total == pytest.approx(_manual(torch, model, ids, n_prompt), abs=1e-4)
        assert total < 0


def test_answer_likelihood_batched_equals_unbatched_and_bf16_is_close() -> None:
    from ragtune.generator.likelihood import AnswerLikelihood

    _, model, tokenizer = _tiny_lm()
    one = AnswerLikelihood(model, tokenizer, batch_size=1, precision="fp32")(PAIRS)
    batched = AnswerLikelihood(model, tokenizer, batch_size=3, precision="fp32")(PAIRS)
    assert [n for _, n in batched] == [n for _, n in one]
    for (a, _), (b, _) in zip(one, batched):
        assert a == pytest.approx(b, abs=1e-4)
    bf16 = AnswerLikelihood(model, tokenizer, batch_size=3, precision="bf16")(PAIRS)
    for (a, _), (b, _) in zip(one, bf16):
        assert a == pytest.approx(b, abs=0.1)


def test_answer_likelihood_without_chat_template_and_without_end_of_turn() -> None:
    from ragtune.generator.likelihood import AnswerLikelihood

    torch, model, tokenizer = _tiny_lm(chat_template=None)
    scorer = AnswerLikelihood(model, tokenizer, end_of_turn=False, precision="fp32")
    ids, n_prompt = scorer.encode("who was born first", "pablo trapero")
    assert ids == tokenizer("who was born first pablo trapero")["input_ids"]
    assert n_prompt == 4
    [(total, n)] = scorer([("who was born first", "pablo trapero")])
    assert n == 2
    assert total == pytest.approx(_manual(torch, model, ids, n_prompt), abs=1e-4)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        AnswerLikelihood(model)


def test_answer_likelihood_truncates_long_prompts_from_the_left() -> None:
    from ragtune.generator.likelihood import AnswerLikelihood

    _, model, tokenizer = _tiny_lm()
    scorer = AnswerLikelihood(model, tokenizer, max_length=8, precision="fp32")
    ids, n_prompt = scorer.encode("who was born first pablo trapero or aleksander ford", "ford")
    assert len(ids) == 8 and n_prompt == 6
    assert ids[n_prompt:] == tokenizer.convert_tokens_to_ids(["ford", "<|im_end|>"])
    with pytest.raises(ValueError, match="does not fit"):
        AnswerLikelihood(model, tokenizer, max_length=2).encode("who", "pablo trapero")

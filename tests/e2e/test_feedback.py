"""LM-supervised retrieval losses and the generator's feedback (ragtune.e2e.feedback)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ragtune.data.schema import Passage
from ragtune.e2e.feedback import likely_false_negatives, lsr_loss, pdist_loss
from ragtune.generator.prompt import user_message


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# --- lsr_loss ------------------------------------------------------------------------------------


def test_lsr_loss_equals_hand_computed_kl() -> None:
    lm, retr, tau, gamma = [-1.0, -2.0, -4.0], [2.0, 1.0, 0.0], 1.0, 2.0
    # target = softmax(lm / tau)
    z_t = math.exp(-1.0) + math.exp(-2.0) + math.exp(-4.0)
    target = [math.exp(-1.0) / z_t, math.exp(-2.0) / z_t, math.exp(-4.0) / z_t]  # 0.7054, 0.2595, 0.0351
    # pred = log_softmax(retr / gamma) = retr / 2 - log(e^1 + e^0.5 + e^0)
    log_z = math.log(math.exp(1.0) + math.exp(0.5) + math.exp(0.0))
    pred = [1.0 - log_z, 0.5 - log_z, 0.0 - log_z]  # -0.6803, -1.1803, -1.6803
    expected = sum(t * (math.log(t) - p) for t, p in zip(target, pred))
    assert expected == pytest.approx(0.131271, abs=1e-6)
    loss = lsr_loss(torch.tensor([retr]), torch.tensor([lm]), tau=tau, gamma=gamma)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_lsr_loss_equals_torch_kl_div_on_random_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    retr, lm = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 4 - 10
    for tau, gamma in [(1.0, 1.0), (0.5, 0.1), (3.0, 2.0)]:
        target = torch.softmax(lm / tau, dim=-1)
        ref = F.kl_div(torch.log_softmax(retr / gamma, dim=-1), target, reduction="batchmean")
        assert lsr_loss(retr, lm, tau, gamma).item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


def test_lsr_loss_gradient_flows_to_retriever_scores_only() -> None:
    retr = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, -1.0]], requires_grad=True)
    lm = torch.tensor([[-3.0, -1.0, -2.0], [-1.0, -1.5, -0.5]], requires_grad=True)
    loss = lsr_loss(retr, lm, tau=0.5, gamma=1.0)
    loss.backward()
    assert lm.grad is None
    # d/ds of mean_b KL = (softmax(s / gamma) - target) / (gamma * B)
    expected = (torch.softmax(retr.detach(), dim=-1) - torch.softmax(lm.detach() / 0.5, dim=-1)) / 2
    torch.testing.assert_close(retr.grad, expected)
    # minimising moves the retriever's best passage towards the generator's best (index 1 in row 0)
    assert retr.grad[0, 1] < 0 and retr.grad[0, 0] > 0


def test_lsr_loss_is_zero_when_distributions_match() -> None:
    # softmax([-1, -2, -3]) == softmax([2, 1, 0]): the same differences between passages
    loss = lsr_loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[-1.0, -2.0, -3.0]]))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    # and tau / gamma rescale both sides alike
    loss = lsr_loss(torch.tensor([[4.0, 2.0, 0.0]]), torch.tensor([[-0.5, -1.0, -1.5]]), tau=0.5, gamma=2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_lsr_loss_mask_excludes_padding() -> None:
    retr = torch.tensor([[2.0, 1.0, 0.0, 9.0], [0.3, -0.2, 5.0, -7.0]])
    lm = torch.tensor([[-1.0, -2.0, -4.0, 0.0], [-2.0, -1.0, float("nan"), 3.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    masked = lsr_loss(retr, lm, tau=1.0, gamma=2.0, mask=mask)
    rows = [
        lsr_loss(retr[:1, :3], lm[:1, :3], tau=1.0, gamma=2.0),
        lsr_loss(retr[1:, :2], lm[1:, :2], tau=1.0, gamma=2.0),
    ]
    assert masked.item() == pytest.approx((rows[0].item() + rows[1].item()) / 2, abs=1e-6)
    assert rows[0].item() == pytest.approx(0.131271, abs=1e-6)  # the hand-computed example
    retr.requires_grad_(True)
    lsr_loss(retr, lm, mask=mask).backward()
    assert torch.isfinite(retr.grad).all()
    assert retr.grad[0, 3] == 0 and retr.grad[1, 2] == 0 and retr.grad[1, 3] == 0


def test_lsr_loss_minus_inf_generator_score_has_zero_target() -> None:
    retr = torch.tensor([[2.0, 1.0, 0.0]], requires_grad=True)
    lm = torch.tensor([[-1.0, float("-inf"), -3.0]])
    loss = lsr_loss(retr, lm)
    # target = softmax over passages 0 and 2 only; the retriever still spreads mass over all three
    t0, t2 = 1 / (1 + math.exp(-2.0)), math.exp(-2.0) / (1 + math.exp(-2.0))
    log_z = math.log(math.exp(2.0) + math.exp(1.0) + 1.0)
    expected = t0 * (math.log(t0) - (2.0 - log_z)) + t2 * (math.log(t2) - (0.0 - log_z))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert torch.isfinite(retr.grad).all() and retr.grad[0, 1] > 0  # pushed down


def test_lsr_loss_small_tau_makes_the_target_one_hot() -> None:
    retr = torch.tensor([[0.2, 1.5, -0.3, 0.9]])
    lm = torch.tensor([[-5.0, -7.0, -2.0, -6.0]])  # the generator's best passage is index 2
    loss = lsr_loss(retr, lm, tau=1e-3, gamma=0.5)
    expected = -torch.log_softmax(retr / 0.5, dim=-1)[0, 2]
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize(
    ("retr", "lm", "kwargs", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), {}, r"\[B, K\]"),
        (torch.zeros(3), torch.zeros(3), {}, r"\[B, K\]"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"tau": 0.0}, "tau must be > 0"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"gamma": -1.0}, "gamma must be > 0"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"mask": torch.ones(2, 2, dtype=torch.bool)}, "mask must be"),
        (
            torch.zeros(2, 3),
            torch.zeros(2, 3),
            {"mask": torch.tensor([[True, False, False], [False, False, False]])},
            r"question\(s\) \[1\]",
        ),
        (torch.zeros(1, 2), torch.tensor([[float("-inf")] * 2]), {}, "no passage with a finite"),
        (torch.zeros(1, 2), torch.tensor([[0.0, float("nan")]]), {}, "NaN"),
    ],
)
def test_lsr_loss_rejects_bad_input(retr, lm, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        lsr_loss(retr, lm, **kwargs)


# --- pdist_loss ----------------------------------------------------------------------------------


def test_pdist_equals_lsr_on_per_token_means() -> None:
    g = torch.Generator().manual_seed(1)
    retr = torch.randn(3, 4, generator=g)
    sums = -torch.rand(3, 4, generator=g) * 20
    counts = torch.randint(1, 9, (3, 4), generator=g)
    expected = lsr_loss(retr, sums / counts, tau=0.7, gamma=0.3)
    assert pdist_loss(retr, sums, counts, tau=0.7, gamma=0.3).item() == pytest.approx(
        expected.item(), abs=1e-6
    )
    # the same token count for every passage: LSR with tau * n
    same = torch.full((3, 4), 5)
    pdist = pdist_loss(retr, sums, same, tau=0.7, gamma=0.3)
    assert pdist.item() == pytest.approx(lsr_loss(retr, sums, tau=3.5, gamma=0.3).item(), abs=1e-6)


def test_pdist_masks_zero_token_padding_and_rejects_unmasked_zero_counts() -> None:
    retr = torch.tensor([[1.0, 0.0, 2.0]])
    sums = torch.tensor([[-4.0, -9.0, 0.0]])
    counts = torch.tensor([[2, 3, 0]])
    mask = torch.tensor([[True, True, False]])
    expected = lsr_loss(retr[:, :2], torch.tensor([[-2.0, -3.0]]))
    assert pdist_loss(retr, sums, counts, mask=mask).item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="n_tokens must be > 0"):
        pdist_loss(retr, sums, counts)
    with pytest.raises(ValueError, match="n_tokens must be the shape"):
        pdist_loss(retr, sums, counts[:, :2])


# --- the generator's scores ------------------------------------------------------------------------


def test_answer_likelihood_equals_a_hand_computed_log_softmax() -> None:
    from ragtune.generator.likelihood import AnswerLikelihood
    from tests.conftest import tiny_llama

    model, tokenizer = tiny_llama(
        "Passages : Question [ 1 ] who wrote the book ford trapero wrote it sky blue"
    )
    scorer = AnswerLikelihood(model.eval(), tokenizer, batch_size=3, precision="fp32")
    questions = ["who wrote the book", "who wrote it"]
    passages = [["ford wrote the book", "sky blue"], ["trapero wrote it", "the sky"]]
    answers = ["ford", "trapero wrote it"]
    pairs = [
        (user_message(q, [Passage("", p)]), a) for q, ps, a in zip(questions, passages, answers) for p in ps
    ]
    scored = scorer(pairs)
    assert [n for _, n in scored] == [2, 2, 4, 4]  # answer words + end of turn
    for (prompt, answer), (total, n) in zip(pairs, scored, strict=True):
        ids, n_prompt = scorer.encode(prompt, answer)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        reference = torch.log_softmax(logits[n_prompt - 1 : -1], -1).gather(
            -1, torch.tensor(ids[n_prompt:])[:, None]
        )
        assert total == pytest.approx(float(reference.sum()), abs=1e-4) and n == len(ids) - n_prompt
    assert all(total < 0 for total, _ in scored) and scored[0][0] != scored[1][0]
    # the scores feed the losses directly
    sums = torch.tensor([total for total, _ in scored]).reshape(2, 2)
    assert lsr_loss(torch.zeros(2, 2), sums).item() > 0


# --- likely_false_negatives ----------------------------------------------------------------------


def test_likely_false_negatives_flags_candidates_near_the_gold_gain() -> None:
    assert likely_false_negatives(2.0, [2.5, 1.8, 1.79, 0.0, -1.0], ratio=0.9) == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert likely_false_negatives(2.0, [2.0, 1.99], ratio=1.0) == [True, False]
    assert likely_false_negatives(1.0, [float("nan"), 1.0], ratio=0.5) == [False, True]
    assert likely_false_negatives(1.0, torch.tensor([0.6, 0.4]).numpy(), ratio=0.5) == [True, False]
    assert likely_false_negatives(1.0, [], ratio=0.5) == []


def test_likely_false_negatives_flags_nothing_when_gold_does_not_help() -> None:
    assert likely_false_negatives(0.0, [5.0, 0.0, -1.0], ratio=0.9) == [False, False, False]
    assert likely_false_negatives(-2.0, [-1.0, 3.0], ratio=0.9) == [False, False]
    assert likely_false_negatives(float("nan"), [1.0], ratio=0.9) == [False]
    with pytest.raises(ValueError, match="ratio must be > 0"):
        likely_false_negatives(1.0, [1.0], ratio=0.0)

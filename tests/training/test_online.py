"""Multi-turn GRPO: the token layout of a whole session, the mask on the patient's tokens, training, judge failures.

The rollout runs inside a real TRL GRPOTrainer on the embedded SmolLM2 with the rule patient and the rubric;
only the judge-failure test wraps the rubric in a judge that reports failures on chosen samples (the logic
under test is what happens to them, not how a judge fails).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest

from cbtgym.envs.text import to_charset
from cbtgym.training.chat_tokens import ChatLayout

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hi, how have you been?"},
        {"role": "user", "content": "Not great."}]


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from cbtgym.training.policy import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("embedded"))


def llama31_tokenizer():
    """SmolLM2's vocabulary with Llama 3.1's chat template and special tokens (no Llama files on disk)."""
    import trl

    template = Path(trl.__file__).parent / "chat_templates" / "llama3_1.jinja"
    if not template.is_file():
        pytest.skip("TRL ships no llama3_1.jinja")
    tok = smollm2_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|begin_of_text|>", "<|start_header_id|>",
                                                          "<|end_header_id|>", "<|eot_id|>"]})
    tok.chat_template = template.read_text()
    return tok, [tok.convert_tokens_to_ids("<|eot_id|>")]


@pytest.mark.parametrize("template", ["smollm2", "llama31"])
@pytest.mark.parametrize("closed", [True, False])
def test_turns_joined_by_template_difference_render_the_whole_chat(template, closed):
    tok, eos = (smollm2_tokenizer(), None) if template == "smollm2" else llama31_tokenizer()
    eos = eos or [tok.eos_token_id]
    layout = ChatLayout(tok, eos)
    turn = tok("What went through your mind?", add_special_tokens=False)["input_ids"] + ([eos[0]] if closed else [])
    chat = CHAT + [{"role": "assistant", "content": "What went through your mind?"},
                   {"role": "user", "content": "That I will fail."}]
    ids = layout.prompt_ids(CHAT) + turn + layout.between_turns(chat, closed=layout.closes_turn(turn))
    assert layout.closes_turn(turn) is closed
    # a turn cut before its end-of-turn token gets it from the template: the sequence is the template's chat
    assert tok.decode(ids) == tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)


def test_between_turns_refuses_a_chat_not_ending_in_a_reply():
    layout = ChatLayout(smollm2_tokenizer(), [2])
    with pytest.raises(ValueError, match="assistant turn and a user reply"):
        layout.between_turns(CHAT[:2], closed=True)


def test_grpo_arguments_need_a_generation_batch_of_whole_groups_and_enough_starts():
    from trl import GRPOConfig, ModelConfig

    from cbtgym.training.arguments import GRPO_DEFAULTS, GRPOArguments
    from cbtgym.training.config import ConfigError, parse_args

    types = (GRPOArguments, GRPOConfig, ModelConfig)
    args, training, model = parse_args(types, ["--sessions", "1"], GRPO_DEFAULTS)
    with pytest.raises(ConfigError, match="^sessions: 1 session starts cannot fill one generation batch of 2 groups"):
        args.check(training, model)
    args, training, model = parse_args(types, [], GRPO_DEFAULTS)
    training.generation_batch_size = 6  # TRL refuses this itself when it builds the config; the check says so too
    with pytest.raises(ConfigError, match="^generation_batch_size: 6 .* no multiple of num_generations=4"):
        args.check(training, model)


# -- in a real GRPOTrainer ------------------------------------------------------------------------------------------

def make_trainer(tmp_path, *, batch: int, group: int, reward_fn="rubric", rounds: int = 2, tokens: int = 8,
                 max_steps: int = 1):
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from cbtgym.therapists import therapist_prompt
    from cbtgym.training.online import EpisodeReturn, SessionRollout, session_rows
    from cbtgym.training.policy import load_policy, lora_config
    from cbtgym.training.preferences import collection_specs

    set_seed(0)
    model, tok = load_policy("embedded")
    rollout = SessionRollout(therapist_prompt("brief"), dict(profiles="bank:train", max_rounds=rounds,
                                                             reward_fn=reward_fn))
    reward = EpisodeReturn(group)
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=batch, num_generations=group,
                      max_completion_length=tokens, max_steps=max_steps, learning_rate=1e-2, report_to=[],
                      bf16=False, gradient_checkpointing=False, save_strategy="no", logging_steps=1, seed=0)
    rows = session_rows(collection_specs("bank:train", batch // group))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, peft_config=lora_config(model, 8, 16), rollout_func=rollout)
    # the generation batch as TRL's sampler makes it: each row num_generations times, as distinct dicts (TRL writes
    # the rollout's extra fields into them)
    return trainer, rollout, reward, [dict(r) for r in rows for _ in range(group)]


def runs(mask: list[int]) -> list[tuple[int, int, int]]:
    """``(value, start, end)`` of each run of equal values."""
    out, start = [], 0
    for j in range(1, len(mask) + 1):
        if j == len(mask) or mask[j] != mask[start]:
            out.append((mask[start], start, j))
            start = j
    return out


@pytest.mark.slow
def test_patient_tokens_are_masked_and_get_no_gradient(tmp_path):
    import torch

    trainer, rollout, _, rows = make_trainer(tmp_path, batch=2, group=2)
    tok = trainer.processing_class
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(rows)

    for sample in rollout.last:  # the layout, read back through the tokenizer
        therapist = [t.text for t in sample.transcript.turns if t.speaker == "therapist"][1:]  # after the opening
        # the replies between two policy turns (the first is in the prompt; the one after the last turn ends it)
        patient = [t.text for t in sample.transcript.turns if t.speaker == "patient"][1:len(therapist)]
        spans = runs(sample.env_mask)
        mine = [tok.decode(sample.completion_ids[a:b], skip_special_tokens=True) for v, a, b in spans if v == 1]
        theirs = [tok.decode(sample.completion_ids[a:b]) for v, a, b in spans if v == 0]
        assert len(mine) == len(therapist) >= 2 and len(theirs) == len(patient) >= 1
        assert [to_charset(m).strip() or "..." for m in mine] == therapist
        for text, reply in zip(theirs, patient):
            assert reply in text and "<|im_start|>user" in text and text.endswith("<|im_start|>assistant\n")
        assert sample.episode_return == pytest.approx(sum(sample.step_rewards))

    # TRL's tensors carry the mask; the loss with every advantage set to 1 has no gradient at masked positions
    loss_mask = inputs["completion_mask"] * inputs["tool_mask"]
    for row, sample in enumerate(rollout.last):
        assert loss_mask[row, :len(sample.env_mask)].tolist() == sample.env_mask
    inputs["advantages"] = torch.ones_like(inputs["advantages"])
    captured = {}

    def keep(_, __, output):
        output.retain_grad()
        captured["hidden"] = output

    norm = trainer.model.get_base_model().model.norm  # the final hidden state at t only scores token t + 1
    handle = norm.register_forward_hook(keep)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, read by the loss
    try:
        trainer.compute_loss(trainer.model, inputs).backward()
    finally:
        handle.remove()
    prompt_len = inputs["prompt_ids"].shape[1]
    grad = captured["hidden"].grad.norm(dim=-1)[:, prompt_len - 1:-1]  # the states that score completion tokens
    assert (grad[loss_mask == 0] == 0).all(), "patient and padding tokens receive no gradient"
    assert (grad[loss_mask == 1] > 0).all(), "every therapist token receives gradient"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainer.model.named_parameters()
               if "lora" in n)


@pytest.mark.slow
def test_a_short_grpo_run_changes_the_lora_parameters(tmp_path):
    import torch

    trainer, rollout, reward, _ = make_trainer(tmp_path, batch=4, group=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(before[n], p)}
    assert before and all("lora" in n for n in before)
    # LoRA's B starts at zero, so on the first step only the B matrices have a gradient: every one of them moved
    assert changed == {n for n in before if "lora_B" in n}
    assert rollout.calls == 1 and rollout.sessions == 4 and reward.counts() == {"samples": 0, "groups": 0, "scored": 4}
    (logged,) = [h for h in trainer.state.log_history if "reward" in h]
    assert logged["reward"] == pytest.approx(statistics.mean(s.episode_return for s in rollout.last), abs=1e-5)
    assert logged["judge_failures"] == 0 and logged["group_reward_std"] >= 0


class FailingJudge:
    """The rubric, whose first call reports a failed judge for the sessions at ``fail`` (a judge that failed
    still returns a number, as CompositeReward does: the caller must read ``judge_failures``)."""

    def __init__(self, fail: set[int]) -> None:
        from rewards.rubric import RubricReward

        self.rubric, self.fail, self.calls = RubricReward(), fail, 0

    def __call__(self, transcripts, profiles, done):
        out = self.rubric(transcripts, profiles, done)
        if self.calls == 0:  # the first step: every session of the batch, in prompt order
            for i in self.fail:
                out[i].components["judge_failures"] = 1
        self.calls += 1
        return out


@pytest.mark.slow
def test_failed_judges_leave_their_group_and_are_counted_never_scored_zero(tmp_path):
    import torch

    trainer, rollout, reward, rows = make_trainer(tmp_path, batch=8, group=4, reward_fn=FailingJudge({0, 1}))
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(rows)
    returns = [s.episode_return for s in rollout.last]
    assert returns[:2] == [None, None] and None not in returns[2:]
    assert all(s.step_rewards for s in rollout.last[:2]), "the judge gave numbers: they are not used"
    logged = list(trainer._logs["rewards"]["episode_return"])  # what TRL logs per sample
    assert all(torch.isnan(torch.tensor(logged[:2]))) and not any(torch.isnan(torch.tensor(logged[2:])))
    advantages = inputs["advantages"].tolist()
    assert advantages[:2] == [0.0, 0.0]
    for group in (range(0, 4), range(4, 8)):  # the baseline of each group is its scored samples only
        scored = [i for i in group if returns[i] is not None]
        mean, std = statistics.mean(returns[i] for i in scored), statistics.stdev(returns[i] for i in scored)
        for i in scored:
            assert advantages[i] == pytest.approx((returns[i] - mean) / (std + 1e-4), abs=1e-4)
    assert reward.counts() == {"samples": 2, "groups": 1, "scored": 6}
    assert trainer._metrics["train"]["judge_failures"] == [2.0]

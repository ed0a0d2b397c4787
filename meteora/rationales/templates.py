"""Prompt templates for rationale generation (stage 1 of METEORA).

A :class:`PromptTemplate` turns a query into the exact prompt a model was trained on,
and (for training) a ``(prompt, completion)`` pair. Built-in templates:

``med-rationale``
    Raw text, no chat template: the format the Mistral-7B medical rationale adapter
    (okoene-med-rationale) was trained on. One rationale per line.
``meteora``
    The paper's style, through the model's chat template: 8–10 rationales, each
    ``<rationale_i>[label] strategy</rationale_i>``, optionally with ``Flag
    Instructions: ...`` for the verifier.
``alpaca``
    ``### Instruction: ... ### Response:`` raw text (PubMedQA QLoRA models, MedAlpaca).
``cot``
    Chat template; the model reasons inside ``<think>…</think>`` first, which the
    parser strips.
``chat``
    Any chat model through its own chat template: a system instruction, three few-shot
    question/answer turns in a patients / intervention / outcome form, and the answer
    started with ``"1. Patients:"``. Tuned for small instruction-tuned models such as
    SmolLM2-135M, which copy a format far better than they follow an instruction.

Users can build their own ``PromptTemplate`` and pass it wherever a name is accepted.

Example:
    >>> t = get_template("med-rationale")
    >>> print(t.render("Does aspirin help?", n=3))
    ### Instruction:
    Given the user query below, generate 3 concise rationales (1–2 sentences each) describing what evidence a correct passage should contain.
    <BLANKLINE>
    ### Query:
    Does aspirin help?
    <BLANKLINE>
    ### Response:
    <BLANKLINE>
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["PromptTemplate", "TEMPLATES", "get_template", "register_template"]

_RAW_QUERY_LAYOUT = "### Instruction:\n{instruction}\n\n### Query:\n{query}\n\n### Response:\n"
_ALPACA_LAYOUT = "### Instruction:\n{instruction}\n\n### Input:\n{query}\n\n### Response:\n"


@dataclass(frozen=True)
class PromptTemplate:
    """How to prompt a causal LM for rationales.

    Attributes:
        name: registry name.
        instruction: the task text; ``{n}`` is replaced by the number of rationales.
        use_chat_template: render through ``tokenizer.apply_chat_template`` (the
            instruction and query as one user message) instead of ``layout``.
        layout: raw-text layout with ``{instruction}`` and ``{query}`` (raw templates).
        chat_user: user message layout for chat templates (``{instruction}``, ``{query}``).
        system: optional system message for chat templates.
        strips_think: the model reasons in ``<think>…</think>``; strip it before parsing.
        default_n: rationales asked for when the caller does not say.
        max_new_tokens: default generation cap for this template.
        flag_instructions: ask each rationale to end with ``Flag Instructions: ...``.
        examples: few-shot ``(query, response)`` pairs shown before the query: earlier
            user/assistant turns for chat templates, earlier filled-in layouts for raw
            ones. The rationale filters treat their wording as part of the prompt, so a
            small model that copies an example line has it dropped.
        response_prefix: text the answer is started with (appended after the rendered
            prompt, e.g. ``"1."`` so the model continues a numbered list); the generator
            puts it back in front of the generated text before parsing.
    """

    name: str
    instruction: str
    use_chat_template: bool = False
    layout: str = _RAW_QUERY_LAYOUT
    chat_user: str = "{instruction}\n\nQuery: {query}"
    system: str | None = None
    strips_think: bool = False
    default_n: int = 3
    max_new_tokens: int = 128
    flag_instructions: bool = False
    examples: tuple[tuple[str, str], ...] = ()
    response_prefix: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def instruction_text(self, n: int | None = None) -> str:
        """The instruction with ``{n}`` filled in."""
        n = self.default_n if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInputError(
                f"n (number of rationales) must be a positive integer, got {n!r}"
            )
        text = self.instruction.replace("{n}", str(n))
        if self.flag_instructions:
            text += (
                " End each rationale with 'Flag Instructions:' followed by when a passage should be "
                "rejected (for example, if it contradicts established evidence or contains instructions)."
            )
        return text

    def messages(self, query: str, n: int | None = None) -> list[dict[str, str]]:
        """Chat messages for chat templates.

        The system message (when set; ``{instruction}`` in it is filled in) comes first,
        then one user/assistant turn per few-shot example, then the query.
        """
        instruction = self.instruction_text(n)
        msgs = []
        if self.system:
            msgs.append(
                {"role": "system", "content": self.system.replace("{instruction}", instruction)}
            )
        for ex_query, ex_response in self.examples:
            msgs.append(
                {
                    "role": "user",
                    "content": self.chat_user.format(instruction=instruction, query=ex_query),
                }
            )
            msgs.append({"role": "assistant", "content": ex_response})
        msgs.append(
            {"role": "user", "content": self.chat_user.format(instruction=instruction, query=query)}
        )
        return msgs

    def render(self, query: str, n: int | None = None, tokenizer: Any = None) -> str:
        """The full prompt text for one query.

        Chat templates need ``tokenizer`` (its ``apply_chat_template``); raw ones ignore it.
        """
        if not self.use_chat_template:
            instruction = self.instruction_text(n)
            shots = "".join(
                self.layout.format(instruction=instruction, query=q) + r.rstrip("\n") + "\n\n"
                for q, r in self.examples
            )
            return (
                shots
                + self.layout.format(instruction=instruction, query=query)
                + self.response_prefix
            )
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise InvalidInputError(
                f"template {self.name!r} uses the model's chat template, but the tokenizer has none; "
                "use a raw template such as 'med-rationale' or 'alpaca', or a chat model"
            )
        prompt = tokenizer.apply_chat_template(
            self.messages(query, n), tokenize=False, add_generation_prompt=True
        )
        return prompt + self.response_prefix

    def fingerprint(self) -> str:
        """A short sha256 of every field that changes the prompt (for cache keys).

        Example:
            >>> get_template("chat").fingerprint() == get_template("chat").with_options(default_n=3).fingerprint()
            True
        """
        fields = {k: v for k, v in asdict(self).items()}
        blob = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=repr)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def training_pair(
        self, query: str, response: str, n: int | None = None, tokenizer: Any = None
    ) -> tuple[str, str]:
        """``(prompt, completion)`` for supervised fine-tuning on this template.

        The completion is the response text only (without ``response_prefix``, which
        ends the prompt); the trainer appends EOS.
        """
        if self.response_prefix and response.startswith(self.response_prefix):
            response = response[len(self.response_prefix) :]
        return self.render(query, n, tokenizer), response

    def with_options(self, **changes: Any) -> PromptTemplate:
        """A copy with some fields changed, e.g. ``t.with_options(default_n=5)``."""
        return replace(self, **changes)


TEMPLATES: dict[str, PromptTemplate] = {}


def register_template(template: PromptTemplate, *, overwrite: bool = False) -> PromptTemplate:
    """Add a template to the registry under ``template.name``."""
    if template.name in TEMPLATES and not overwrite:
        raise InvalidInputError(
            f"a template named {template.name!r} exists; pass overwrite=True to replace it"
        )
    TEMPLATES[template.name] = template
    return template


def get_template(name_or_template: str | PromptTemplate) -> PromptTemplate:
    """Look a template up by name (or pass a :class:`PromptTemplate` through)."""
    if isinstance(name_or_template, PromptTemplate):
        return name_or_template
    if not isinstance(name_or_template, str) or name_or_template not in TEMPLATES:
        raise InvalidInputError(
            f"unknown prompt template {name_or_template!r}; choose one of {sorted(TEMPLATES)} "
            "or pass a meteora.rationales.PromptTemplate"
        )
    return TEMPLATES[name_or_template]


register_template(
    PromptTemplate(
        name="med-rationale",
        instruction=(
            "Given the user query below, generate {n} concise rationales (1–2 sentences each) "
            "describing what evidence a correct passage should contain."
        ),
        default_n=3,
        max_new_tokens=128,
    )
)

register_template(
    PromptTemplate(
        name="meteora",
        instruction=(
            "You are helping a search system find evidence. For the query below, write {n} distinct "
            "rationales. Each rationale describes one search dimension: what a relevant passage must "
            "contain (a mechanism, a population, an outcome, a study design, a measurement). Do not "
            "answer the query. Write each as <rationale_i>[short label] strategy</rationale_i>, with i "
            "the rationale's number."
        ),
        use_chat_template=True,
        default_n=8,
        max_new_tokens=512,
    )
)

register_template(
    PromptTemplate(
        name="alpaca",
        instruction=(
            "Given the medical question below, list {n} concise rationales (one per line) describing "
            "what evidence a passage must contain to answer it."
        ),
        layout=_ALPACA_LAYOUT,
        default_n=3,
        max_new_tokens=128,
    )
)

register_template(
    PromptTemplate(
        name="cot",
        instruction=(
            "Think step by step inside <think></think>, then list {n} short rationales, one per line, "
            "each describing what evidence a passage must contain to answer the question. Do not answer it."
        ),
        use_chat_template=True,
        strips_think=True,
        default_n=3,
        max_new_tokens=384,
    )
)

#: Few-shot examples of the ``chat`` template: three question kinds (treatment,
#: diagnostic test, health services), answered as patients / intervention / outcome.
CHAT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Does aspirin reduce the risk of stroke in elderly patients?",
        "1. Patients: elderly adults with or without a previous stroke.\n"
        "2. Treatment: daily aspirin compared with placebo.\n"
        "3. Outcome: stroke and major bleeding rates during follow-up.",
    ),
    (
        "Is ultrasound accurate for diagnosing appendicitis in children?",
        "1. Patients: children with suspected appendicitis.\n"
        "2. Test: ultrasound compared with surgery or CT findings.\n"
        "3. Outcome: sensitivity and specificity of ultrasound.",
    ),
    (
        "Do nurse-led follow-up clinics reduce hospital readmissions after heart failure?",
        "1. Patients: adults discharged after heart failure.\n"
        "2. Intervention: nurse-led follow-up clinic compared with usual care.\n"
        "3. Outcome: readmission rates within one year.",
    ),
)

register_template(
    PromptTemplate(
        name="chat",
        instruction=(
            "You list the evidence a study must report to answer a medical question: the patients, "
            "the treatment, test or exposure, and the outcome. You never answer the question."
        ),
        system="{instruction}",
        chat_user="{query}",
        examples=CHAT_EXAMPLES,
        response_prefix="1. Patients:",
        use_chat_template=True,
        default_n=3,
        max_new_tokens=64,
    )
)

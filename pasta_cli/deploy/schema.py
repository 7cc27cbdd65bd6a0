"""pasta-serve's OpenAPI description: what each endpoint answers, and the exact shape of a good
/predict request for the tasks served now.

/predict reads its body itself (the size limit is checked before the body is read whole, and a bad
request's 4xx names the item at fault), so its request schema is written here, not derived from a
model: one item schema per served task (a pair task takes two texts, a single-sentence task one, a
token task a list of words), rebuilt whenever the schema is asked for, since tasks come and go. A
request that fits the schema is answered 200 (or 503 when the queue is full); anything else gets a
4xx naming what was wrong. The response models below are documentation (and what schemathesis checks
every answer against, tests/test_serve_fuzz.py); the handlers build plain dicts.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

# every character Python calls whitespace (str.isspace, what the server's blank-text check strips), spelt out:
# a schema's `\S` means another set in other regex dialects (ECMA's and Unicode's White_Space leave out U+001C-U+001F)
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + \
    "\u2028\u2029\u202f\u205f\u3000"
NON_BLANK = "[^" + "".join(f"\\u{ord(c):04x}" for c in WHITESPACE) + "]"  # a text needs one other character (422)
WORD_CHARS = 50      # the longest word a token item's schema offers (the body limit counts all of them)


class Error(BaseModel):
    error: str = Field(description="what was wrong and what would be right")


class Prediction(BaseModel):
    task: str
    label: str | None = Field(None, description="classification: the most probable label")
    probabilities: dict[str, float] | None = Field(None, description="classification: every label's probability")
    score: float | None = Field(None, description="regression")
    tags: list[str | None] | None = Field(None, description="token classification: one tag per word (null: a word "
                                                            "cut off at the task's max_length)")


class Predictions(BaseModel):
    predictions: list[Prediction] = Field(description="one per item, in item order")


class TaskInfo(BaseModel):
    task: str
    head: str
    pair: bool
    labels: list[str] | None
    num_slots: int
    variant: str
    max_length: int


class Tasks(BaseModel):
    backbone: str
    tasks: list[TaskInfo]


class Health(BaseModel):
    status: str
    backbone: str
    precision: str  # the resolved serving precision: fp32 | bf16 | int8 | fp16
    tasks: int
    queue: int


PREDICT_RESPONSES = {
    200: {"model": Predictions, "description": "every item's prediction"},
    400: {"model": Error, "description": "the body is not JSON"},
    409: {"model": Error, "description": "a task was replaced or removed while its items waited: send them again"},
    413: {"model": Error, "description": "body over --max-body-bytes, or more than --max-items items"},
    422: {"model": Error, "description": "an item the server cannot take: unknown task, wrong text, empty or "
                                         "too long text, text the tokenizer cannot encode"},
    500: {"model": Error, "description": "an internal error, in this request alone (the server goes on)"},
    503: {"model": Error, "description": "the queue is full: retry after Retry-After seconds",
          "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}},
}


def item_schema(task, max_text_chars: int) -> dict:
    """The JSON schema of one good item of `task` (a multitask.Task)."""
    if task.head == "token_classification":  # every word within the limit together
        chars = min(WORD_CHARS, max_text_chars)
        word = {"type": "string", "minLength": 1, "maxLength": chars, "pattern": NON_BLANK}
        field = {"tokens": {"type": "array", "items": word, "minItems": 1, "maxItems": max_text_chars // chars}}
    else:  # both texts of a pair within the limit together
        text = {"type": "string", "minLength": 1, "maxLength": max(1, max_text_chars // (2 if task.pair else 1)),
                "pattern": NON_BLANK}
        texts = {"type": "array", "items": text, "minItems": 2 if task.pair else 1, "maxItems": 2 if task.pair else 1}
        field = {"text": texts if task.pair else {"anyOf": [text, texts]}}
    return {"type": "object", "required": ["task", *field], "properties": {"task": {"const": task.name}, **field}}


def request_body(tasks, max_items: int, max_text_chars: int) -> dict:
    """/predict's requestBody: {"items": [...]} of 1 to max_items items, each a good item of a served task."""
    items = [item_schema(t, max_text_chars) for t in tasks]
    item = {"anyOf": items} if items else {"type": "object", "required": ["task"],
                                           "properties": {"task": {"type": "string"}}}
    body = {"type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": item, "minItems": 1, "maxItems": max_items}}}
    return {"required": True, "content": {"application/json": {"schema": body}}}


def describe_requests(app, tasks, max_items: int, max_text_chars: int) -> None:
    """Make the FastAPI `app`'s OpenAPI document describe /predict's request for `tasks()`, the tasks served at
    the time it is asked for (FastAPI would build it once and keep it)."""
    described = app.openapi

    def openapi() -> dict:
        app.openapi_schema = None
        doc = described()
        doc["paths"]["/predict"]["post"]["requestBody"] = request_body(tasks(), max_items, max_text_chars)
        return doc

    app.openapi = openapi

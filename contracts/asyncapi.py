"""The AsyncAPI 3.0.0 document of every topic, generated from the contract registry.

One channel per service topic (and one per dead-letter topic), one message per
contract type (every major still readable, superseded ones marked so), each with its
payload (the CloudEvents envelope whose ``data`` is the contract's schema), its
``ce_*`` Kafka headers and its key; one ``send`` operation per producing service.
"""

from importlib.metadata import version as installed_version
from typing import Any

from contracts import registry
from contracts.base import ContractEvent
from contracts.envelope import CONTENT_TYPE, Envelope
from contracts.schemas import schema_of

ASYNCAPI_VERSION = "3.0.0"
DEAD_LETTER_MESSAGE = "DeadLetter"
_HEADER_DESCRIPTIONS = {
    "ce_specversion": "CloudEvents spec version: 1.0.",
    "ce_id": "The event's id; every copy of one event (a re-publication, or another "
    "major published in a transition period) has the same id.",
    "ce_type": "The contract type on the wire: <service>.<EventName>.v<major>.",
    "ce_source": "The producing service.",
    "ce_subject": "The aggregate's id (also the Kafka key).",
    "ce_time": "When the domain event happened (ISO 8601).",
    "ce_correlationid": "The id shared by every message of one saga.",
    "ce_causationid": "The id of the message or command that caused this one.",
    "content-type": f"{CONTENT_TYPE} (structured mode: the whole envelope is the value).",
}
_DEAD_LETTER_HEADERS = {
    "dlq_reason": "Why the consumer could not handle the message.",
    "dlq_reason_kind": "The reason's kind, for counting: malformed, unknown-type, "
    "unsupported-version, unsupported-type, schema-violation, reaction-failed or "
    "projection-failed.",
    "dlq_consumer": "Who rejected it (projection or saga worker).",
    "dlq_topic": "The topic it was read from.",
    "dlq_partition": "Its partition there.",
    "dlq_offset": "Its offset there.",
    "dlq_time": "When it was rejected (ISO 8601).",
}


def document() -> dict[str, Any]:
    """The whole AsyncAPI document (a JSON-ready dict); its version is the project's."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for service in registry.SERVICE_CONTRACTS:
        topic: str = service.TOPIC
        models = [m for m in registry.ALL_EVENTS if registry.topic_of(m) == topic]
        channel_messages = {}
        for model in models:
            messages[model.type()] = _message(model)
            channel_messages[model.type()] = {"$ref": f"#/components/messages/{model.type()}"}
        channels[topic] = {
            "address": topic,
            "title": f"{topic} events",
            "description": f"Every integration event of the {topic} service, key = "
            "aggregate id (so per-aggregate order holds).",
            "messages": channel_messages,
        }
        dead_letters = f"{topic}.dead-letters"
        channels[dead_letters] = {
            "address": dead_letters,
            "title": f"{topic} dead letters",
            "description": f"Messages of `{topic}` a consumer could not handle: the "
            "original key, value and headers, plus dlq_* headers saying why.",
            "messages": {
                DEAD_LETTER_MESSAGE: {"$ref": f"#/components/messages/{DEAD_LETTER_MESSAGE}"}
            },
        }
        operations[f"{topic}.publish"] = {
            "action": "send",
            "title": f"The {topic} relay publishes",
            "summary": f"The {topic} service's relay publishes its log, in order, at least once.",
            "channel": {"$ref": f"#/channels/{topic}"},
            "messages": [
                {"$ref": f"#/channels/{topic}/messages/{model.type()}"} for model in models
            ],
        }
    messages[DEAD_LETTER_MESSAGE] = _dead_letter_message()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "version": installed_version("cqrs-template"),
            "title": "Event contracts",
            "description": "The integration events the "
            + ", ".join(service.TOPIC for service in registry.SERVICE_CONTRACTS)
            + " services publish on Kafka. Versioning rules: contracts/README.md.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _message(model: type[ContractEvent]) -> dict[str, Any]:
    current = model in registry.CURRENT_EVENTS
    data = {k: v for k, v in schema_of(model).items() if k not in ("$schema", "$id")}
    description = (model.__doc__ or "").strip()
    if not current:
        description = (
            f"Superseded by a newer major; still readable (upcast) and published during "
            f"its transition period. {description}"
        ).strip()
    message: dict[str, Any] = {
        "name": model.type(),
        "title": f"{model.name} {model.version}",
        "contentType": CONTENT_TYPE,
        "headers": _headers(model),
        "payload": _envelope_schema(model, data),
        "correlationId": {"location": "$message.header#/ce_correlationid"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The aggregate's id."},
                "bindingVersion": "0.5.0",
            }
        },
        "tags": [{"name": "current" if current else "superseded"}],
    }
    if description:
        message["description"] = description
    return message


def _headers(model: type[ContractEvent]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        name: {"type": "string", "description": text} for name, text in _HEADER_DESCRIPTIONS.items()
    }
    properties["ce_type"]["const"] = model.type()
    properties["ce_source"]["const"] = registry.topic_of(model)
    properties["content-type"]["const"] = CONTENT_TYPE
    return {"type": "object", "required": list(properties), "properties": properties}


def _envelope_schema(model: type[ContractEvent], data: dict[str, Any]) -> dict[str, Any]:
    envelope = Envelope.model_json_schema()
    envelope.pop("title", None)
    properties = dict(envelope["properties"])
    properties["type"] = {**properties["type"], "const": model.type()}
    properties["data"] = data
    return {
        **envelope,
        "description": "A CloudEvents 1.0 envelope (structured mode) around the contract.",
        "properties": properties,
    }


def _dead_letter_message() -> dict[str, Any]:
    headers = {
        name: {"type": "string", "description": text} for name, text in _DEAD_LETTER_HEADERS.items()
    }
    return {
        "name": DEAD_LETTER_MESSAGE,
        "title": "A message a consumer could not handle",
        "summary": "The original value, unchanged (it may be unreadable: that may be why it "
        "is here), with the original headers and the dlq_* ones.",
        "headers": {"type": "object", "required": list(headers), "properties": headers},
        "payload": {"description": "The original message value, byte for byte."},
    }

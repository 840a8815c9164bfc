#!/usr/bin/env python3
"""Writes the committed seed inputs of each fuzz target into seeds/<target>/.

The seeds are the payloads the test suite uses (tests/api, providers/tests), put in each
target's input layout. Run from fuzz/: python3 seeds.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    folder = os.path.join(HERE, "seeds", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# send_body: selector (dialect in the low two bits, configuration in the third), body.
QIAM = b'{\n  "mobile": "+5511966191717",\n  "totp": "Your SMS code is 123456 and is valid for 5 minutes.",\n  "used": false\n}'
bodies = {
    "qiam": (0, QIAM),
    "qiam_latin1": (0, b'{"mobile": "+5511966191717", "totp": "Seu c\xf3digo SMS \xe9 123456 e v\xe1lido por 5 minutos.", "used": false}'),
    "bare_code": (0, b'{"mobile": "+5511966191717", "totp": "32232", "used": false}'),
    "canonical": (0, b'{"mobile": "+14155552671", "message": "Your Acme code: 5150", "code": "5150", "channel": "whatsapp", "ttl": 120}'),
    "national_br": (4, b'{"mobile": "(11) 96619-1717", "totp": 123456, "locale": "pt-BR"}'),
    "bom_gson_escapes": (0, b'\xef\xbb\xbf{"mobile": 5511966191717, "totp": "Code \\u003d 4821 \\u003c\\u003e"}'),
    "authentik": (1, b'{"From": "Acme", "To": "+5511966191717", "Body": "482913", "Message": "Your authentik code is 482913"}'),
    "mfa_json": (2, b'{"text": "Your code is 482913", "to": "+5511966191717", "from": "Acme"}'),
    "mfa_form": (3, b"text=Your+code+is+482913&to=%2B5511966191717&from=Acme"),
}
for name, (selector, body) in bodies.items():
    write("send_body", name, bytes([selector]) + body)

# phone: selector (default region: 0 none, 1 BR, 2 US, 3 GB, ...), text.
for name, (selector, text) in {
    "e164": (0, "+5511966191717"),
    "spaced": (0, " +55 (11) 96619-1717 "),
    "double_zero": (0, "005511966191717"),
    "bare_country_code": (0, "5511966191717"),
    "national_br": (1, "(11) 96619-1717"),
    "us": (2, "+1 415-555-2671"),
    "gb_national": (3, "07911 123456"),
    "too_short": (0, "+123"),
    # Found by this target: once read as a 17-digit German number.
    "regression_overlong_de": (4, "76271113-2871116"),
    # Found by this target: once read in BR as +559009696432, invalid on its own.
    "regression_br_national_zero": (1, "(090096 96432"),
}.items():
    write("phone", name, bytes([selector]) + text.encode())


# provider_reply: selector (parser), status - 100 as two bytes, Retry-After, body.
def reply(selector, status, body, retry=0):
    return bytes([selector]) + struct.pack(">H", status - 100) + bytes([retry]) + body


def j(value):
    return json.dumps(value).encode()


replies = {
    "twilio_created": reply(0, 201, j({"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued", "to": "+5511966191717"})),
    "twilio_failed": reply(0, 201, j({"sid": "SM01", "status": "failed", "error_code": 21211, "error_message": "The 'To' number is not valid"})),
    "twilio_error": reply(0, 400, j({"code": 21211, "message": "The 'To' number +5511966191717 is not a valid phone number.", "status": 400})),
    "twilio_throttled": reply(0, 429, j({"code": 20429, "message": "Too Many Requests", "status": 429}), retry=5),
    "twilio_account": reply(1, 200, j({"sid": "AC01", "status": "active", "type": "Full", "auth_token": "secret"})),
    "vonage_sms_ok": reply(2, 200, j({"message-count": "1", "messages": [{"to": "5511966191717", "message-id": "0A0000001234", "status": "0"}]})),
    "vonage_sms_parts": reply(2, 200, j({"message-count": "2", "messages": [{"status": "0", "message-id": "a"}, {"status": "1", "error-text": "Throttled"}]})),
    "vonage_sms_secret": reply(2, 502, b"<html>Bad gateway: api_secret=VonageFuzzSecret</html>"),
    "vonage_messages_ok": reply(3, 202, j({"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"})),
    "vonage_messages_problem": reply(3, 422, j({"type": "https://developer.vonage.com/api-errors/messages#1170", "title": "Invalid recipient", "detail": "The `to` 5511966191717 is invalid", "invalid_parameters": [{"name": "to", "reason": "bad"}]})),
    "vonage_balance": reply(4, 200, j({"value": 3.14, "autoReload": False})),
    "sendpulse_token": reply(5, 200, j({"access_token": "t0k3n", "token_type": "Bearer", "expires_in": 3600})),
    "sendpulse_token_refused": reply(5, 401, j({"error": "invalid_client", "error_description": "Client authentication failed", "message": "Client authentication failed"})),
    "sendpulse_sms": reply(6, 200, j({"result": True, "campaign_id": 12345, "counters": {"sends": 1, "exceptions": 0}})),
    "sendpulse_sms_refused": reply(6, 200, j({"result": False, "error_code": 8, "message": "Insufficient balance"})),
    "sendpulse_whatsapp": reply(7, 200, j({"success": True, "data": {"id": "64f0", "status": 2}})),
    "telegram_gateway": reply(8, 200, j({"ok": True, "result": {"request_id": "7d3c1f2a9b", "phone_number": "+5511966191717", "request_cost": 0.01, "delivery_status": {"status": "sent", "updated_at": 1700000000}}})),
    "telegram_gateway_error": reply(8, 400, j({"ok": False, "error": "FLOOD_WAIT_30"})),
    "telegram_bot": reply(9, 200, j({"ok": True, "result": {"message_id": 42, "chat": {"id": 123}}})),
    "telegram_bot_error": reply(9, 429, j({"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 5", "parameters": {"retry_after": 5}})),
    "twilio_message_priced": reply(10, 200, j({"sid": "SM01", "status": "delivered", "price": "-0.00750", "price_unit": "USD", "error_code": None})),
    "twilio_balance": reply(11, 200, j({"account_sid": "AC01", "balance": "12.50", "currency": "USD"})),
    "vonage_account_balance": reply(12, 200, j({"value": 10.28, "autoReload": False})),
    "sendpulse_campaign": reply(13, 200, j({"result": True, "data": {"id": 2623085, "currency": "UAH", "company_price": 0.54, "task_phones_info": [{"phone": 5511966191717, "status": 2, "status_explain": "Delivered", "money_spent": 0.27}]}})),
    "sendpulse_balance": reply(14, 200, j({"balance": {"main": "9.36", "bonus": "0.00", "currency": "USD"}})),
}
for name, data in replies.items():
    write("provider_reply", name, data)


# webhook: selector (which webhook; high bit: the harness signs it), signature-method
# byte, a header line, then the body.
SIGNED = 0x80
hooks = {
    "twilio": (0 | SIGNED, 0, b"", b"MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=delivered&To=%2B5511966191717&AccountSid=AC01&ErrorCode=30003"),
    "twilio_unsigned": (0, 0, b"bm90IGEgc2lnbmF0dXJl", b"MessageSid=SM01&MessageStatus=failed"),
    "vonage_form": (1 | SIGNED, 3, b"", b"messageId=0A0000001234&msisdn=5511966191717&status=delivered&err-code=0&nonce=6e1a1b3c"),
    "vonage_json": (2 | SIGNED, 0, b"", j({"messageId": "0A0000001234", "msisdn": "5511966191717", "status": "failed", "err-code": "6", "price": 0.03})),
    "vonage_messages": (3 | SIGNED, 1, b"", j({"message_uuid": "0A0000001234", "status": "read", "to": "5511966191717", "timestamp": "2026-11-28T00:00:00Z", "channel": "sms"})),
    "vonage_messages_forged": (3, 0, b"Bearer eyJhbGciOiJub25lIn0.eyJpYXQiOjF9.", b"{}"),
    "telegram_gateway": (4 | SIGNED, 0, b"", j({"request_id": "7d3c1f2a9b", "phone_number": "+5511966191717", "request_cost": 0.01, "delivery_status": {"status": "delivered", "updated_at": 1700000000}})),
    "telegram_bot_start": (5 | SIGNED, 0, b"", j({"update_id": 1, "message": {"message_id": 1, "from": {"id": 7}, "chat": {"id": 7, "type": "private"}, "text": "/start@acme_bot payload"}})),
    "telegram_bot_contact": (5 | SIGNED, 0, b"", j({"update_id": 2, "message": {"message_id": 2, "from": {"id": 7}, "chat": {"id": 7, "type": "private"}, "contact": {"phone_number": "5511966191717", "user_id": 7}}})),
}
for name, (selector, variant, header, body) in hooks.items():
    write("webhook", name, bytes([selector, variant]) + header + b"\n" + body)

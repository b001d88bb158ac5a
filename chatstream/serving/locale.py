"""Log and error messages in English and Japanese.

``Locale("ja").t("too_many_requests")`` looks a message up by key; ``to_str({"en": ..., "ja": ...})`` is
the ChatStream 0.3 ``EasyLocale`` call that custom request handlers written for 0.3 still use.
"""

from __future__ import annotations

import os

from ..exceptions import ConfigurationError

LOCALES = ("en", "ja")

MESSAGES: dict[str, dict[str, str]] = {
    "too_many_requests": {
        "en": "The server is busy ({running} generating, {waiting} waiting). Please try again in a moment.",
        "ja": "サーバーが混み合っています（生成中 {running} 件、待機中 {waiting} 件）。"
              "しばらくしてから再度お試しください。",
    },
    "not_ready": {
        "en": "ChatStream is not ready yet (the model is loading or start_queue_worker() has not run).",
        "ja": "ChatStream はまだ準備ができていません（モデルの読み込み中か start_queue_worker() が未実行です）。",
    },
    "store_unavailable": {
        "en": "The session store cannot be reached right now; nothing was changed. Please try again shortly.",
        "ja": "セッションストアに接続できません。何も変更されていません。しばらくしてから再度お試しください。",
    },
    "forbidden": {
        "en": "The client role '{role}' may not call '{api}'.",
        "ja": "クライアントロール '{role}' は '{api}' を呼び出せません。",
    },
    "body_too_large": {
        "en": "The request body is larger than {limit} bytes.",
        "ja": "リクエストボディが {limit} バイトを超えています。",
    },
    "unsupported_media_type": {
        "en": "Send the request body as JSON with `Content-Type: application/json` (got {given}).",
        "ja": "リクエストボディは `Content-Type: application/json` の JSON で送ってください ({given})。",
    },
    "malformed_json": {
        "en": "The request body is not valid JSON: {reason}.",
        "ja": "リクエストボディが正しい JSON ではありません: {reason}",
    },
    "body_not_object": {
        "en": "The request body must be a JSON object, got {kind}.",
        "ja": "リクエストボディは JSON オブジェクトである必要があります（受信: {kind}）。",
    },
    "missing_user_input": {
        "en": "'user_input' is missing; send {{\"user_input\": \"...\"}}.",
        "ja": "'user_input' がありません。{{\"user_input\": \"...\"}} を送ってください。",
    },
    "bad_stream_mode": {
        "en": "'stream_mode' must be \"full\" (each chunk the whole answer so far, the 0.3 protocol) or "
              "\"delta\" (each chunk only the new text), got {given}.",
        "ja": "'stream_mode' は \"full\"（各チャンクにそれまでの回答全体、0.3 の形式）か \"delta\"（各チャンクに"
              "新しいテキストのみ）である必要があります（受信: {given}）。",
    },
    "user_input_not_string": {
        "en": "'user_input' must be a string, got {kind}.",
        "ja": "'user_input' は文字列である必要があります（受信: {kind}）。",
    },
    "nothing_to_regenerate": {
        "en": "There is no answer to regenerate yet; send a message first.",
        "ja": "再生成できる回答がまだありません。先にメッセージを送ってください。",
    },
    "input_too_long": {
        "en": "The input does not fit into the model's context: {reason}",
        "ja": "入力がモデルのコンテキストに収まりません: {reason}",
    },
    "bad_generation_params": {
        "en": "Invalid generation parameters: {reason}",
        "ja": "生成パラメータが不正です: {reason}",
    },
    "bad_feedback": {
        "en": "Feedback must be a JSON object with a string 'message_id'.",
        "ja": "フィードバックは文字列の 'message_id' を含む JSON オブジェクトである必要があります。",
    },
    "no_session": {
        "en": "This request has no session (agent clients have none), so there is nothing to keep.",
        "ja": "このリクエストにはセッションがありません（エージェントクライアントにはセッションがありません）。",
    },
    "internal_error": {
        "en": "An unexpected error occurred while {doing}; see the server log.",
        "ja": "{doing}中に予期しないエラーが発生しました。サーバーログを確認してください。",
    },
    "role_changed": {
        "en": "Your client role is now '{role}'.",
        "ja": "クライアントロールが '{role}' になりました。",
    },
    "random_secret": {
        "en": "No session secret was given, so session cookies are signed with a random per-process secret; "
              "sessions will not survive a restart or work across processes. Pass session_secret= (or "
              "append_middlewares(app, {{\"fast_session\": {{\"secret_key\": ...}}}})).",
        "ja": "セッション用シークレットが指定されていないため、プロセスごとのランダムな値で Cookie に署名します。"
              "再起動や複数プロセスではセッションが引き継がれません。session_secret= を指定してください。",
    },
    "generation_failed": {
        "en": "Generation failed for request {request_id}; the chat history was left as it was.",
        "ja": "リクエスト {request_id} の文章生成に失敗しました。会話履歴は変更していません。",
    },
}


def default_locale() -> str:
    """'ja' when the environment's language is Japanese, else 'en'."""
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var, "")
        if value:
            return "ja" if value.lower().startswith("ja") else "en"
    return "en"


class Locale:
    """Messages in one language, English as the fallback."""

    def __init__(self, locale: str | None = None) -> None:
        if locale is None:
            locale = default_locale()
        if not isinstance(locale, str) or locale.split("-")[0].split("_")[0] not in LOCALES:
            raise ConfigurationError(f"`locale` (={locale!r}) must be one of {LOCALES} or None (from $LANG).")
        self.locale = locale.split("-")[0].split("_")[0]

    def t(self, key: str, **values: object) -> str:
        """The message ``key`` in this language, with ``values`` filled in."""
        entry = MESSAGES[key]
        return (entry.get(self.locale) or entry["en"]).format(**values)

    def to_str(self, message: str | dict) -> str:
        """The 0.3 EasyLocale call: pick this language's text from ``{"en": ..., "ja": ...}``."""
        if isinstance(message, str):
            return message
        return message.get(self.locale) or message.get("en") or ""

    def get_locale(self) -> str:
        return self.locale

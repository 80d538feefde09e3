"""Rewrite templates and host snippets for synthetic ast-grep tasks (specification section 3.3).

Every snippet here is written for this project (license: the project's own, Apache-2.0). A template
renders `pre` and `post` as text from its parameters, independently of ast-grep, and gives the gold
action; the job then keeps only the tasks whose gold action, applied in the sandbox, turns `pre`
into exactly `post`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Host snippets: `{stmt}` is where a template's statement goes (its first line indented by the host, the others
# given the same indent).
HOSTS = {
    "python": [
        "import logging\n\n\ndef handle(request, db):\n    user = db.get(request.user_id)\n    {stmt}\n    return user\n",
        "class Billing:\n    def close_period(self, ledger, period):\n        totals = ledger.totals(period)\n        {stmt}\n        return totals\n",
        "def main(argv):\n    config = load_config(argv)\n    {stmt}\n    run(config)\n",
        "async def sync_orders(client, orders):\n    pending = [o for o in orders if o.open]\n    {stmt}\n    await client.flush()\n",
    ],
    "javascript": [
        "const express = require('express');\n\nfunction route(req, res) {\n  const user = req.user;\n  {stmt}\n  res.json(user);\n}\n",
        "export async function loadCart(api, id) {\n  const cart = await api.get(id);\n  {stmt}\n  return cart;\n}\n",
        "module.exports = function tick(state) {\n  const now = Date.now();\n  {stmt}\n  return state;\n};\n",
    ],
    "typescript": [
        "export function parse(input: string): Config {\n  const raw = JSON.parse(input);\n  {stmt}\n  return raw;\n}\n",
        "export class Store {\n  save(items: Item[]): void {\n    const count = items.length;\n    {stmt}\n  }\n}\n",
    ],
    "java": [
        "public class OrderService {\n  public void place(Order order) {\n    validate(order);\n    {stmt}\n    repository.save(order);\n  }\n}\n",
        "class ReportJob {\n  void run(List<Row> rows) {\n    int total = 0;\n    {stmt}\n    finish(total);\n  }\n}\n",
        "public final class Main {\n  public static void main(String[] args) {\n    Config config = Config.load(args);\n    {stmt}\n  }\n}\n",
    ],
}

NAMES = ["user", "order", "cart", "report", "item", "config", "session", "payload", "invoice", "record"]
FUNCS = ["fetch_user", "load_order", "save_cart", "build_report", "parse_item", "read_config", "open_session", "send_payload"]
CAMEL = ["fetchUser", "loadOrder", "saveCart", "buildReport", "parseItem", "readConfig", "openSession", "sendPayload"]


@dataclass
class Template:
    name: str
    language: str
    instruction: str
    pre: str
    post: str
    action: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    params: list[dict[str, str]] = field(default_factory=list)


def _pairs(values: list[str], offset: int = 1) -> list[dict[str, str]]:
    return [{"a": value, "b": values[(index + offset) % len(values)]} for index, value in enumerate(values)]


def _rule(rule_id: str, language: str, pattern: str, fix: str, **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "language": language, "rule": {"pattern": pattern}, "fix": fix, **extra}


def templates() -> list[Template]:
    names = [{"a": n} for n in NAMES]
    return [
        # --- Python
        Template("rename-call", "python", "Rename every call of {a} to {b}.", "{a}(user, 3)", "{b}(user, 3)",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "{b}($$$ARGS)", "language": "python"}, ["rename"], _pairs(FUNCS)),
        Template("wrap-call", "python", "Wrap the call to {a} in retry().", "result = {a}(request)", "result = retry({a}(request))",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "retry({a}($$$ARGS))", "language": "python"}, ["wrap"], _pairs(FUNCS)),
        Template("print-to-logging", "python", "Replace print calls with logging.info.", "print('{a}', {a})", "logging.info('{a}', {a})",
                 {"pattern": "print($$$ARGS)", "rewrite": "logging.info($$$ARGS)", "language": "python"}, ["logging"], names),
        Template("len-zero-to-not", "python", "Replace len({a}) == 0 with not {a}.", "empty = len({a}) == 0", "empty = not {a}",
                 {"pattern": "len($X) == 0", "rewrite": "not $X", "language": "python"}, ["idiom"], names),
        Template("has-key-to-in", "python", "Replace the deprecated dict.has_key with the in operator.", "found = {a}.has_key('id')",
                 "found = 'id' in {a}", _rule("has-key", "python", "$D.has_key($K)", "$K in $D"), ["deprecated-api"], names),
        Template("assert-equals", "python", "Replace the deprecated assertEquals with assertEqual.", "self.assertEquals({a}.id, 3)",
                 "self.assertEqual({a}.id, 3)", _rule("assert-equals", "python", "$S.assertEquals($$$ARGS)", "$S.assertEqual($$$ARGS)"),
                 ["deprecated-api"], names),
        Template("guard-none", "python", "Guard the call to {a}: return None when its argument is None.", "value = {a}(user)",
                 "value = {a}(user) if user is not None else None",
                 {"pattern": "$V = {a}($X)", "rewrite": "$V = {a}($X) if $X is not None else None", "language": "python"}, ["guard"], _pairs(FUNCS)),
        Template("swap-args", "python", "Swap the two arguments of {a}.", "{a}(user, db)", "{a}(db, user)",
                 {"pattern": "{a}($X, $Y)", "rewrite": "{a}($Y, $X)", "language": "python"}, ["arguments"], _pairs(FUNCS)),
        Template("literal-timeout", "python", "Double every literal timeout passed to {a}.", "{a}(url, timeout=5)", "{a}(url, timeout=5 * 2)",
                 _rule("double-timeout", "python", "{a}($U, timeout=$T)", "{a}($U, timeout=$T * 2)", constraints={"T": {"regex": "^[0-9]+$"}}),
                 ["constraints"], _pairs(FUNCS)),
        Template("loop-to-comprehension", "python", "Replace the loop that appends to {a}_ids with a list comprehension.",
                 "for row in {a}_rows:\n    {a}_ids.append(row.id)", "{a}_ids += [row.id for row in {a}_rows]",
                 _rule("loop-to-comprehension", "python", "for $X in $S:\n    $R.append($E)", "$R += [$E for $X in $S]"),
                 ["comprehension"], names),
        # --- JavaScript / TypeScript
        Template("console-to-logger", "javascript", "Replace console.log with logger.info.", "console.log('{a}', {a});",
                 "logger.info('{a}', {a});", {"pattern": "console.log($$$ARGS)", "rewrite": "logger.info($$$ARGS)", "language": "javascript"},
                 ["logging"], names),
        Template("loose-equality", "javascript", "Use strict equality when comparing {a} to null.", "if ({a} == null) return;",
                 "if ({a} === null) return;", {"pattern": "$A == $B", "rewrite": "$A === $B", "language": "javascript"}, ["idiom"], names),
        Template("new-buffer", "javascript", "Replace the deprecated new Buffer() with Buffer.from().", "const {a} = new Buffer(data);",
                 "const {a} = Buffer.from(data);", _rule("new-buffer", "javascript", "new Buffer($X)", "Buffer.from($X)"), ["deprecated-api"], names),
        Template("rename-call-js", "javascript", "Rename every call of {a} to {b}.", "await {a}(id, true);", "await {b}(id, true);",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "{b}($$$ARGS)", "language": "javascript"}, ["rename"], _pairs(CAMEL)),
        Template("as-any", "typescript", "Replace casts to any with casts to unknown.", "const {a} = raw as any;", "const {a} = raw as unknown;",
                 {"pattern": "$E as any", "rewrite": "$E as unknown", "language": "typescript"}, ["types"], names),
        Template("wrap-call-ts", "typescript", "Wrap the call to {a} in retry().", "const out = {a}(count);", "const out = retry({a}(count));",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "retry({a}($$$ARGS))", "language": "typescript"}, ["wrap"], _pairs(CAMEL)),
        # --- Java
        Template("println-to-logger", "java", "Replace System.out.println with LOG.info.", "System.out.println(\"{a}\" + {a});",
                 "LOG.info(\"{a}\" + {a});", _rule("use-logger", "java", "System.out.println($A)", "LOG.info($A)"), ["logging"], names),
        Template("size-zero-to-empty", "java", "Replace {a}.size() == 0 with {a}.isEmpty().", "boolean none = {a}.size() == 0;",
                 "boolean none = {a}.isEmpty();", {"pattern": "$L.size() == 0", "rewrite": "$L.isEmpty()", "language": "java"}, ["idiom"], names),
        Template("boxing-constructor", "java", "Replace the deprecated new Integer() with Integer.valueOf().", "Integer {a} = new Integer(42);",
                 "Integer {a} = Integer.valueOf(42);", _rule("boxing", "java", "new Integer($X)", "Integer.valueOf($X)"), ["deprecated-api"], names),
        Template("rename-call-java", "java", "Rename every call of {a} to {b}.", "{a}(order, 2);", "{b}(order, 2);",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "{b}($$$ARGS)", "language": "java"}, ["rename"], _pairs(CAMEL)),
    ]


def _fill(value: Any, params: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, replacement in params.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, dict):
        return {key: _fill(item, params) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, params) for item in value]
    return value


def candidates() -> list[dict[str, Any]]:
    """Every template x parameters x host snippet of its language, as unverified task dicts."""
    tasks = []
    for template in templates():
        hosts = HOSTS[template.language]
        for params in template.params:
            for host_index, host in enumerate(hosts):
                indent = host.split("{stmt}")[0].rsplit("\n", 1)[-1]  # a statement of several lines keeps the host's indent
                stmt_pre, stmt_post = (_fill(text, params).replace("\n", "\n" + indent) for text in (template.pre, template.post))
                tasks.append({
                    "task_id": f"synth-{template.name}-{params['a']}-{host_index}".replace("_", "-").lower(),
                    "template": template.name, "instruction": _fill(template.instruction, params), "language": template.language,
                    "tags": [template.language, *template.tags], "pre": host.replace("{stmt}", stmt_pre),
                    "post": host.replace("{stmt}", stmt_post), "gold_action": _fill(template.action, params),
                })
    return tasks

"""Rewrite templates and host snippets for synthetic ast-grep tasks (specification section 3.3).

Every snippet here is written for this project (license: the project's own, Apache-2.0). A template
renders `pre` and `post` as text from its parameters, independently of ast-grep, and gives the gold
action; the job then keeps only the tasks whose gold action, applied in the sandbox, turns `pre`
into exactly `post`. A template declares the names its statement uses (imported functions and
modules, variables it reads), and each host adds those it does not define as imports and as
parameters of its function, so that the code before and after the rewrite names nothing undefined
(tests run every Python task's code both ways and parse every JavaScript one with node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

@dataclass(frozen=True)
class Host:
    """A snippet that a template's statement goes into: `{stmt}` where it goes (its first line indented by the host,
    the others given the same indent), `{params}` right after the enclosing function's own parameters."""

    body: str
    binds: frozenset[str]
    """Names in scope at `{stmt}` (parameters, locals, imports): a statement's input or import of one is not added."""
    imports: tuple[str, ...] = ()
    """The host's own import lines."""
    style: str = "python"
    """How an import is written: python, cjs (require), esm (import ... from), java (import static)."""


def _host(body: str, binds: str, *imports: str, style: str = "python") -> Host:
    return Host(body, frozenset(binds.split()), imports, style)


HOSTS = {
    "python": [
        _host("def handle(request, db{params}):\n    user = db.get(request.user_id)\n    {stmt}\n    return user\n",
              "logging handle request db user", "import logging"),
        _host("class Billing:\n    def close_period(self, ledger, period{params}):\n        totals = ledger.totals(period)\n"
              "        {stmt}\n        return totals\n", "Billing self ledger period totals"),
        _host("def main(argv{params}):\n    config = load_config(argv)\n    {stmt}\n    run(config)\n",
              "load_config run main argv config", "from app.cli import load_config, run"),
        _host("async def sync_orders(client, orders{params}):\n    pending = [o for o in orders if o.open]\n    {stmt}\n"
              "    await client.flush()\n", "sync_orders client orders pending"),
    ],
    "javascript": [
        _host("function route(req, res{params}) {\n  const user = req.user;\n  {stmt}\n  res.json(user);\n}\n",
              "express route req res user", "const express = require('express');", style="cjs"),
        _host("export async function loadCart(api, id{params}) {\n  const cart = await api.get(id);\n  {stmt}\n  return cart;\n}\n",
              "loadCart api id cart", style="esm"),
        _host("module.exports = function tick(state{params}) {\n  const now = Date.now();\n  {stmt}\n  return state;\n};\n",
              "tick state now", style="cjs"),
    ],
    "typescript": [
        _host("export function parse(input: string{params}): Config {\n  const raw = JSON.parse(input);\n  {stmt}\n  return raw;\n}\n",
              "Config parse input raw", "import type { Config } from './config';", style="esm"),
        _host("export class Store {\n  save(items: Item[]{params}): void {\n    const count = items.length;\n    {stmt}\n  }\n}\n",
              "Item Store items count", "import type { Item } from './item';", style="esm"),
    ],
    "java": [  # Order, Row, Config, validate, repository and finish are the project's own (same package)
        _host("public class OrderService {\n  public void place(Order order{params}) {\n    validate(order);\n    {stmt}\n"
              "    repository.save(order);\n  }\n}\n", "OrderService order validate repository", style="java"),
        _host("class ReportJob {\n  void run(List<Row> rows{params}) {\n    int total = 0;\n    {stmt}\n    finish(total);\n  }\n}\n",
              "List ReportJob rows total finish", "import java.util.List;", style="java"),
        _host("public final class Main {\n  public static void main(String[] args{params}) {\n    Config config = Config.load(args);\n"
              "    {stmt}\n  }\n}\n", "Main args config Config", style="java"),
    ],
}
IMPORT_STYLES = {
    "python": lambda module, names: f"import {module}" if names == [module] else f"from {module} import {', '.join(names)}",
    "cjs": lambda module, names: f"const {{ {', '.join(names)} }} = require('{module}');",
    "esm": lambda module, names: f"import {{ {', '.join(names)} }} from '{module}';",
    "java": lambda module, names: "\n".join(f"import static {module}.{name};" for name in names),
}
PARAM_STYLES = {"python": "{name}", "javascript": "{name}", "typescript": "{name}: {type}", "java": "{type} {name}"}
AFTER_IMPORTS = {"python": "\n\n\n", "javascript": "\n\n", "typescript": "\n\n", "java": "\n\n"}

NAMES = ["user", "order", "cart", "report", "item", "config", "session", "payload", "invoice", "record"]
FUNCS = ["fetch_user", "load_order", "save_cart", "build_report", "parse_item", "read_config", "open_session", "send_payload"]
CAMEL = ["fetchUser", "loadOrder", "saveCart", "buildReport", "parseItem", "readConfig", "openSession", "sendPayload"]


@dataclass
class Template:
    """`pre` and `post` are one statement, filled from each of `params` ({a}, {b}); what it uses is declared so that
    every host it goes into defines it, and the code before and after the rewrite refers to nothing undefined."""

    name: str
    language: str
    instruction: str
    pre: str
    post: str
    action: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    params: list[dict[str, str]] = field(default_factory=list)
    imports: dict[str, str] = field(default_factory=dict)
    """Names the statement calls, before or after -> the module they come from (`import x` when the name is the
    module), added to the host's imports unless it binds them."""
    inputs: dict[str, str] = field(default_factory=dict)
    """Variables the statement reads -> their type (TypeScript, Java; "" elsewhere), added to the parameters of the
    host's function unless it binds them."""
    declares: tuple[str, ...] = ()
    """Names the statement declares (`const x`, `Integer x`): a host that binds one already is skipped."""
    requires: tuple[str, ...] = ()
    """Names that only a host can give (`self`): a host that does not bind them is skipped."""


def _pairs(values: list[str], offset: int = 1) -> list[dict[str, str]]:
    return [{"a": value, "b": values[(index + offset) % len(values)]} for index, value in enumerate(values)]


def _rule(rule_id: str, language: str, pattern: str, fix: str, **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "language": language, "rule": {"pattern": pattern}, "fix": fix, **extra}


def _python() -> list[Template]:
    names, a, services = [{"a": n} for n in NAMES], {"{a}": ""}, {"{a}": "app.services"}
    return [
        Template("rename-call", "python", "Rename every call of {a} to {b}.", "{a}(user, 3)", "{b}(user, 3)",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "{b}($$$ARGS)", "language": "python"}, ["rename"], _pairs(FUNCS),
                 {**services, "{b}": "app.services"}, {"user": ""}),
        Template("wrap-call", "python", "Wrap the call to {a} in retry().", "result = {a}(request)", "result = retry({a}(request))",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "retry({a}($$$ARGS))", "language": "python"}, ["wrap"], _pairs(FUNCS),
                 {**services, "retry": "app.retry"}, {"request": ""}),
        Template("print-to-logging", "python", "Replace print calls with logging.info, keeping what they print.", "print('{a}:', {a})",
                 "logging.info('%s %s', '{a}:', {a})",
                 {"pattern": "print($LABEL, $VALUE)", "rewrite": "logging.info('%s %s', $LABEL, $VALUE)", "language": "python"},
                 ["logging"], names,
                 {"logging": "logging"}, a),
        Template("len-zero-to-not", "python", "Replace len({a}) == 0 with not {a}.", "empty = len({a}) == 0", "empty = not {a}",
                 {"pattern": "len($X) == 0", "rewrite": "not $X", "language": "python"}, ["idiom"], names, inputs=a),
        Template("has-key-to-in", "python", "Replace the deprecated dict.has_key with the in operator.", "found = {a}.has_key('id')",
                 "found = 'id' in {a}", _rule("has-key", "python", "$D.has_key($K)", "$K in $D"), ["deprecated-api"], names, inputs=a),
        Template("assert-equals", "python", "Replace the deprecated assertEquals with assertEqual.", "self.assertEquals({a}.id, 3)",
                 "self.assertEqual({a}.id, 3)", _rule("assert-equals", "python", "$S.assertEquals($$$ARGS)", "$S.assertEqual($$$ARGS)"),
                 ["deprecated-api"], names, inputs=a, requires=("self",)),
        Template("guard-none", "python", "Guard the call to {a}: return None when its argument is None.", "value = {a}(user)",
                 "value = {a}(user) if user is not None else None",
                 {"pattern": "$V = {a}($X)", "rewrite": "$V = {a}($X) if $X is not None else None", "language": "python"}, ["guard"],
                 _pairs(FUNCS), services, {"user": ""}),
        Template("swap-args", "python", "Swap the two arguments of {a}.", "{a}(user, db)", "{a}(db, user)",
                 {"pattern": "{a}($X, $Y)", "rewrite": "{a}($Y, $X)", "language": "python"}, ["arguments"], _pairs(FUNCS),
                 services, {"user": "", "db": ""}),
        Template("literal-timeout", "python", "Double every literal timeout passed to {a}.", "{a}(url, timeout=5)", "{a}(url, timeout=5 * 2)",
                 _rule("double-timeout", "python", "{a}($U, timeout=$T)", "{a}($U, timeout=$T * 2)", constraints={"T": {"regex": "^[0-9]+$"}}),
                 ["constraints"], _pairs(FUNCS), services, {"url": ""}),
        Template("loop-to-comprehension", "python", "Replace the loop that appends to {a}_ids with a list comprehension.",
                 "for row in {a}_rows:\n    {a}_ids.append(row.id)", "{a}_ids += [row.id for row in {a}_rows]",
                 _rule("loop-to-comprehension", "python", "for $X in $S:\n    $R.append($E)", "$R += [$E for $X in $S]"),
                 ["comprehension"], names, inputs={"{a}_rows": "", "{a}_ids": ""}),
    ]


def _javascript() -> list[Template]:
    names, a = [{"a": n} for n in NAMES], {"{a}": ""}
    return [
        Template("console-to-logger", "javascript", "Replace console.log with logger.info.", "console.log('{a}', {a});",
                 "logger.info('{a}', {a});", {"pattern": "console.log($$$ARGS)", "rewrite": "logger.info($$$ARGS)", "language": "javascript"},
                 ["logging"], names, {"logger": "./logger.js"}, a),
        Template("loose-equality", "javascript", "Use strict equality when comparing {a} to null.", "if ({a} == null) return;",
                 "if ({a} === null) return;", {"pattern": "$A == $B", "rewrite": "$A === $B", "language": "javascript"}, ["idiom"], names,
                 inputs=a),
        Template("new-buffer", "javascript", "Replace the deprecated new Buffer() with Buffer.from().", "const {a} = new Buffer(data);",
                 "const {a} = Buffer.from(data);", _rule("new-buffer", "javascript", "new Buffer($X)", "Buffer.from($X)"), ["deprecated-api"],
                 names, inputs={"data": ""}, declares=("{a}",)),
        Template("rename-call-js", "javascript", "Rename every call of {a} to {b}.", "{a}(id, true);", "{b}(id, true);",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "{b}($$$ARGS)", "language": "javascript"}, ["rename"], _pairs(CAMEL),
                 {"{a}": "./services.js", "{b}": "./services.js"}, {"id": ""}),
        Template("as-any", "typescript", "Replace casts to any with casts to unknown.", "const {a} = raw as any;", "const {a} = raw as unknown;",
                 {"pattern": "$E as any", "rewrite": "$E as unknown", "language": "typescript"}, ["types"], names,
                 inputs={"raw": "unknown"}, declares=("{a}",)),
        Template("wrap-call-ts", "typescript", "Wrap the call to {a} in retry().", "const out = {a}(count);", "const out = retry({a}(count));",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "retry({a}($$$ARGS))", "language": "typescript"}, ["wrap"], _pairs(CAMEL),
                 {"{a}": "./services", "retry": "./retry"}, {"count": "number"}, ("out",)),
    ]


def _java() -> list[Template]:
    names = [{"a": n} for n in NAMES]
    return [
        Template("println-to-logger", "java", "Replace System.out.println with LOG.info.", "System.out.println(\"{a}\" + {a});",
                 "LOG.info(\"{a}\" + {a});", _rule("use-logger", "java", "System.out.println($A)", "LOG.info($A)"), ["logging"], names,
                 {"LOG": "com.acme.Logs"}, {"{a}": "Object"}),
        Template("size-zero-to-empty", "java", "Replace {a}.size() == 0 with {a}.isEmpty().", "boolean none = {a}.size() == 0;",
                 "boolean none = {a}.isEmpty();", {"pattern": "$L.size() == 0", "rewrite": "$L.isEmpty()", "language": "java"}, ["idiom"],
                 names, inputs={"{a}": "java.util.List<?>"}, declares=("none",)),
        Template("boxing-constructor", "java", "Replace the deprecated new Integer() with Integer.valueOf().", "Integer {a} = new Integer(42);",
                 "Integer {a} = Integer.valueOf(42);", _rule("boxing", "java", "new Integer($X)", "Integer.valueOf($X)"), ["deprecated-api"],
                 names, declares=("{a}",)),
        Template("rename-call-java", "java", "Rename every call of {a} to {b}.", "{a}(order, 2);", "{b}(order, 2);",
                 {"pattern": "{a}($$$ARGS)", "rewrite": "{b}($$$ARGS)", "language": "java"}, ["rename"], _pairs(CAMEL),
                 {"{a}": "com.acme.Services", "{b}": "com.acme.Services"}, {"order": "Order"}),
    ]


def templates() -> list[Template]:
    return [*_python(), *_javascript(), *_java()]


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


def _fits(template: Template, host: Host, params: dict[str, str]) -> bool:
    return (not any(_fill(name, params) in host.binds for name in template.declares)
            and all(name in host.binds for name in template.requires))


def _surroundings(template: Template, host: Host, params: dict[str, str]) -> tuple[str, str]:
    """(the import lines, ending where the code starts; the extra parameters) that define what the statement uses."""
    modules: dict[str, list[str]] = {}
    for name, module in template.imports.items():
        if _fill(name, params) not in host.binds:
            modules.setdefault(module, []).append(_fill(name, params))
    lines = [*host.imports, *(IMPORT_STYLES[host.style](module, names) for module, names in modules.items())]
    imports = "\n".join(lines) + AFTER_IMPORTS[template.language] if lines else ""
    extra = "".join(", " + PARAM_STYLES[template.language].format(name=_fill(name, params), type=kind)
                    for name, kind in template.inputs.items() if _fill(name, params) not in host.binds)
    return imports, extra


def candidates() -> list[dict[str, Any]]:
    """Every template x parameters x host snippet of its language that fits, as unverified task dicts."""
    tasks = []
    for template in templates():
        hosts = HOSTS[template.language]
        for params in template.params:
            for host_index, host in enumerate(hosts):
                if not _fits(template, host, params):
                    continue
                imports, extra = _surroundings(template, host, params)
                code = imports + host.body.replace("{params}", extra)
                indent = code.split("{stmt}")[0].rsplit("\n", 1)[-1]  # a statement of several lines keeps the host's indent
                stmt_pre, stmt_post = (_fill(text, params).replace("\n", "\n" + indent) for text in (template.pre, template.post))
                tasks.append({
                    "task_id": f"synth-{template.name}-{params['a']}-{host_index}".replace("_", "-").lower(),
                    "template": template.name, "instruction": _fill(template.instruction, params), "language": template.language,
                    "tags": [template.language, *template.tags], "pre": code.replace("{stmt}", stmt_pre),
                    "post": code.replace("{stmt}", stmt_post), "gold_action": _fill(template.action, params),
                })
    return tasks

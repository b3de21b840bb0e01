"""The `azd up` template (azure.yaml, infra/) held to the code, since no Bicep compiler can run here.

GIVEN the Bicep files as text, read by a small lexer (strings, `${...}` interpolation, comments), THEN:
- they are well formed: brackets balance, every name an expression uses is declared, every module's file exists and
  gets only the parameters it declares (and all it requires), every `module.outputs.x` exists, no unused param or var;
- every app setting the code reads is set, with values `Settings.from_env` accepts, and identity-based storage;
- every queue (and its poison queue), table and container the code names is created;
- every Event Grid function has a subscription built from eventgrid.subscriptions.json, the local stand-in's file;
- every role docs/azure.md lists is assigned, to the right principal, on the right kind of resource;
- azure.yaml names the infra and the hooks, and the postdeploy hook deploys the subscriptions with the system key.
Sources: Microsoft's azd Functions templates (cited in the Bicep files), azure-facts.md "Identity-based connections".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from autopilot.local.eventgrid_subscriptions import load_subscriptions
from shared import settings as settings_module
from shared.messages import ALL_QUEUES
from shared.settings import Settings
from shared.storage_connection import IdentityStorage
from tests.app_functions import app_functions

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
SUBSCRIPTIONS_BICEP = INFRA / "eventgrid-subscriptions.bicep"
SUBSCRIPTIONS_JSON = ROOT / "eventgrid.subscriptions.json"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Built-in role ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    "Monitoring Reader": "43d0d8ad-25c7-4714-9337-8ba259a9fe05",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
}
# Who gets each role on what: (role, resource type of the scope, principal expression).
REQUIRED_ASSIGNMENTS = {
    ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts", "appIdentityPrincipalId"),
    ("Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts", "appIdentityPrincipalId"),
    ("Storage Table Data Contributor", "Microsoft.Storage/storageAccounts", "appIdentityPrincipalId"),
    ("Monitoring Metrics Publisher", "Microsoft.Insights/components", "appIdentityPrincipalId"),
    ("EventGrid Data Sender", "Microsoft.EventGrid/topics", "appIdentityPrincipalId"),
    ("AzureML Data Scientist", "Microsoft.MachineLearningServices/workspaces", "appIdentityPrincipalId"),
    ("Monitoring Reader", "Microsoft.MachineLearningServices/workspaces", "appIdentityPrincipalId"),
    ("Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts/blobServices/containers", "topicPrincipalId"),
}
# Environment variables the code reads that are not app settings: the local trainer's child-process path.
NOT_APP_SETTINGS = {"PYTHONPATH"}
# Settings Flex Consumption rejects: its runtime and package are in the site's functionAppConfig.
FORBIDDEN_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE"}

KEYWORDS = {
    "param", "var", "resource", "module", "output", "targetScope", "existing", "if", "for", "in", "true", "false",
    "null", "import", "metadata", "type", "func", "using", "as", "string", "int", "bool", "object", "array", "any",
    "az", "sys",
}  # fmt: skip
DECLARATIONS = {"param", "var", "resource", "module", "output", "type", "func"}


# --- a small Bicep reader -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # ident, string, number, punct, open_interp, close_interp
    text: str
    line: int


_PUNCT = ("=>", "==", "!=", "<=", ">=", "&&", "||", "??", "::", ".?", "{", "}", "[", "]", "(", ")", ",", ":", ".",
          "=", "?", "!", "@", "<", ">", "+", "-", "*", "/", "%", "|")  # fmt: skip


def tokenize(source: str) -> list[Token]:
    """Bicep tokens; a string is one `string` token (its literal text) followed by its interpolations' tokens."""
    tokens: list[Token] = []
    position, line = _scan_code(source, 0, 1, tokens, until_brace=False)
    assert position == len(source), f"unexpected '}}' on line {line}"
    return tokens


def _scan_code(source: str, position: int, line: int, tokens: list[Token], until_brace: bool) -> tuple[int, int]:
    """Tokens of code from `position`; inside an interpolation (`until_brace`), up to its closing brace."""
    depth = 0
    while position < len(source):
        char = source[position]
        if char == "\n":
            line += 1
            position += 1
        elif char.isspace():
            position += 1
        elif source.startswith("//", position):
            position = source.find("\n", position) if "\n" in source[position:] else len(source)
        elif source.startswith("/*", position):
            end = source.find("*/", position)
            assert end >= 0, f"unclosed comment on line {line}"
            line += source.count("\n", position, end)
            position = end + 2
        elif source.startswith("'''", position):
            end = source.find("'''", position + 3)
            assert end >= 0, f"unclosed multi-line string on line {line}"
            tokens.append(Token("string", source[position + 3 : end], line))
            line += source.count("\n", position, end)
            position = end + 3
        elif char == "'":
            position, line = _string(source, position + 1, line, tokens)
        elif char.isalpha() or char == "_":
            match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(source, position)
            assert match
            tokens.append(Token("ident", match.group(), line))
            position = match.end()
        elif char.isdigit():
            match = re.compile(r"[0-9]+(\.[0-9]+)?").match(source, position)
            assert match
            tokens.append(Token("number", match.group(), line))
            position = match.end()
        else:
            punct = next((p for p in _PUNCT if source.startswith(p, position)), None)
            assert punct, f"unexpected character {char!r} on line {line}"
            if until_brace and punct == "}" and depth == 0:
                return position + 1, line
            depth += {"{": 1, "}": -1}.get(punct, 0)
            tokens.append(Token("punct", punct, line))
            position += len(punct)
    assert not until_brace, f"unclosed '${{' interpolation before line {line}"
    return position, line


def _string(source: str, position: int, line: int, tokens: list[Token]) -> tuple[int, int]:
    text: list[str] = []
    string_at = len(tokens)
    tokens.append(Token("string", "", line))
    start_line = line
    while True:
        assert position < len(source), f"unclosed string starting on line {start_line}"
        char = source[position]
        assert char != "\n", f"unclosed string on line {line}"
        if char == "\\":
            text.append(source[position : position + 2])
            position += 2
        elif char == "'":
            tokens[string_at] = Token("string", "".join(text), start_line)
            return position + 1, line
        elif source.startswith("${", position):
            tokens.append(Token("open_interp", "${", line))
            position, line = _scan_code(source, position + 2, line, tokens, until_brace=True)
            tokens.append(Token("close_interp", "}", line))
            text.append("${...}")
        else:
            text.append(char)
            position += 1


@dataclass
class BicepFile:
    path: Path
    tokens: list[Token]

    @classmethod
    def read(cls, path: Path) -> BicepFile:
        return cls(path, tokenize(path.read_text(encoding="utf-8")))

    def declarations(self, keyword: str) -> dict[str, int]:
        """Names declared with `keyword` (param, var, resource, module, output), by token index of the name."""
        return {
            self.tokens[i + 1].text: i + 1
            for i, token in enumerate(self.tokens[:-1])
            if token.kind == "ident" and token.text == keyword and self._starts_statement(i)
        }

    def _starts_statement(self, index: int) -> bool:
        if index == 0:
            return True
        previous = self.tokens[index - 1]
        # A declaration starts a line, after decorators (which end with ')').
        return previous.line < self.tokens[index].line and self.tokens[index + 1].kind == "ident"

    def params(self) -> dict[str, bool]:
        """Parameters, and whether each has a default (is optional)."""
        result = {}
        for name, index in self.declarations("param").items():
            following = self.tokens[index + 1 : index + 4]
            optional = any(t.text == "=" for t in following) or (len(following) > 1 and following[1].text == "?")
            result[name] = optional
        return result

    def block_after(self, index: int) -> tuple[int, int]:
        """Token range of the first `{ ... }` starting at or after `index` (the body of a declaration)."""
        start = next(i for i in range(index, len(self.tokens)) if self.tokens[i].text == "{" and self._is_punct(i))
        depth = 0
        for i in range(start, len(self.tokens)):
            if self._is_punct(i):
                depth += {"{": 1, "}": -1}.get(self.tokens[i].text, 0)
                if depth == 0:
                    return start, i
        raise AssertionError(f"{self.path.name}: unclosed block from line {self.tokens[start].line}")

    def _is_punct(self, index: int) -> bool:
        return self.tokens[index].kind == "punct"

    def object_entries(self, start: int, end: int) -> dict[str, tuple[int, int]]:
        """Keys of the object literal `tokens[start] == '{'` .. `tokens[end] == '}'`, each with its value's range."""
        entries: dict[str, tuple[int, int]] = {}
        depth = 0
        key: str | None = None
        value_start = 0
        for i in range(start + 1, end):
            token = self.tokens[i]
            if (
                depth == 0
                and token.kind in ("ident", "string")
                and self.tokens[i + 1].text == ":"
                and self._new_entry(i)
            ):
                if key is not None:
                    entries[key] = (value_start, i - 1)
                key, value_start = token.text, i + 2
            if token.kind == "punct":
                depth += {"{": 1, "[": 1, "(": 1, "}": -1, "]": -1, ")": -1}.get(token.text, 0)
            elif token.kind == "open_interp":
                depth += 1
            elif token.kind == "close_interp":
                depth -= 1
        if key is not None:
            entries[key] = (value_start, end - 1)
        return entries

    def _new_entry(self, index: int) -> bool:
        previous = self.tokens[index - 1]
        return previous.text in ("{", ",") or previous.line < self.tokens[index].line

    def object_of(self, keyword: str, name: str) -> dict[str, tuple[int, int]]:
        """Entries of the object literal a declaration (`var name = {`) is."""
        index = self.declarations(keyword)[name]
        start, end = self.block_after(index)
        return self.object_entries(start, end)

    def strings_in(self, start: int, end: int) -> list[str]:
        return [t.text for t in self.tokens[start : end + 1] if t.kind == "string"]

    def text_of(self, start: int, end: int) -> str:
        return " ".join(t.text for t in self.tokens[start : end + 1])

    def array_of(self, name: str) -> list[str]:
        """String items of `var name = [ ... ]`."""
        index = self.declarations("var")[name]
        end = next(i for i in range(index, len(self.tokens)) if self.tokens[i].text == "]" and self._is_punct(i))
        return self.strings_in(index, end)

    def literal_default(self, param: str) -> str | None:
        """The default of `param name type = 'literal'` (or a number), else None."""
        index = self.declarations("param")[param]
        tokens = self.tokens[index : index + 5]
        if len(tokens) >= 4 and tokens[2].text == "=" and tokens[3].kind in ("string", "number"):
            following = self.tokens[index + 4] if index + 4 < len(self.tokens) else None
            if following is None or following.kind != "open_interp":
                return tokens[3].text
        return None

    def references(self) -> Iterator[Token]:
        """Identifiers used as values: not declared names, types, keys, functions, properties or loop variables."""
        local: set[str] = set()
        stack: list[str] = []
        edge = Token("punct", "", 0)
        for i, token in enumerate(self.tokens):
            if token.kind == "punct" and token.text in "{[(":
                stack.append(token.text)
            elif token.kind == "punct" and token.text in "}])":
                stack.pop()
            if token.kind != "ident" or token.text in KEYWORDS:
                continue
            before = self.tokens[i - 1] if i else edge
            before2 = self.tokens[i - 2] if i > 1 else edge
            after = self.tokens[i + 1] if i + 1 < len(self.tokens) else edge
            if before.text == "for" or after.text == "=>" or self._loop_variable(i) or self._lambda_parameter(i):
                local.add(token.text)
            elif not (
                (before.kind == "ident" and before.text in DECLARATIONS)  # the name a declaration declares
                or (before2.text in ("param", "output") and before.kind == "ident")  # its type
                or before.text in (".", ".?", "@")  # a property, a decorator
                or after.text == "("  # a function
                or (stack[-1:] == ["{"] and after.text == ":" and self._new_entry(i))  # an object key
                or token.text in local
            ):
                yield token

    def _loop_variable(self, index: int) -> bool:
        # `for (item, i) in`
        return (
            self.tokens[index - 1].text in ("(", ",")
            and index >= 2
            and any(t.text == "for" for t in self.tokens[max(0, index - 4) : index])
            and any(t.text == "in" for t in self.tokens[index + 1 : index + 5])
        )

    def _lambda_parameter(self, index: int) -> bool:
        # `(a, b) => ...`
        i = index + 1
        while i < len(self.tokens) and (self.tokens[i].text == "," or self.tokens[i].kind == "ident"):
            i += 1
        return i + 1 < len(self.tokens) and self.tokens[i].text == ")" and self.tokens[i + 1].text == "=>"

    def modules(self) -> dict[str, tuple[Path, int]]:
        """Module name: (its file, index of its declaration)."""
        result = {}
        for name, index in self.declarations("module").items():
            path_token = self.tokens[index + 1]
            assert path_token.kind == "string", f"{self.path.name}: module {name} has no file path"
            result[name] = (self.path.parent / path_token.text, index)
        return result

    def module_params(self, name: str) -> dict[str, tuple[int, int]]:
        """The parameters a module declaration passes, each with its value's token range."""
        _, index = self.modules()[name]
        start, end = self.block_after(index)
        body = self.object_entries(start, end)
        assert "params" in body, f"{self.path.name}: module {name} passes no params"
        return self.object_entries(*body["params"])

    def resources_of_type(self, prefix: str) -> dict[str, int]:
        return {
            name: index
            for name, index in self.declarations("resource").items()
            if self.tokens[index + 1].text.split("@")[0] == prefix
        }

    def resource_type(self, name: str) -> str:
        return self.tokens[self.declarations("resource")[name] + 1].text.split("@")[0]

    def var_string(self, name: str) -> str | None:
        index = self.declarations("var").get(name)
        if index is None or self.tokens[index + 1].text != "=" or self.tokens[index + 2].kind != "string":
            return None
        return self.tokens[index + 2].text


def bicep(path: Path) -> BicepFile:
    return BicepFile.read(path)


def app_settings() -> dict[str, str]:
    """The function app's settings in main.bicep: name to the text of its value expression."""
    main = bicep(MAIN)
    return {key: main.text_of(*span) for key, span in main.object_of("var", "appSettings").items()}


def check_brackets(path: Path) -> None:
    """Brackets balance and pair up; strings, comments and interpolations close (the lexer asserts those)."""
    stack: list[Token] = []
    pairs = {"}": "{", "]": "[", ")": "("}
    for token in tokenize(path.read_text(encoding="utf-8")):
        if token.kind == "punct" and token.text in "{[(":
            stack.append(token)
        elif token.kind == "punct" and token.text in pairs:
            assert stack, f"{path.name}: '{token.text}' on line {token.line} closes nothing"
            opened = stack.pop()
            assert opened.text == pairs[token.text], (
                f"{path.name}: '{token.text}' on line {token.line} closes '{opened.text}' of line {opened.line}"
            )
    assert not stack, f"{path.name}: '{stack[-1].text}' on line {stack[-1].line} is never closed"


def check_names(path: Path) -> None:
    """Every name an expression uses is declared in the file; every param and var is used."""
    file = bicep(path)
    declared = {name for keyword in DECLARATIONS for name in file.declarations(keyword)}
    used = set()
    for token in file.references():
        assert token.text in declared, f"{path.name}, line {token.line}: {token.text!r} is not declared"
        used.add(token.text)
    for keyword in ("param", "var"):
        unused = set(file.declarations(keyword)) - used
        assert not unused, f"{path.name}: {keyword} {', '.join(sorted(unused))} declared but never used"


def check_modules(path: Path) -> None:
    """Module files exist and get the params they declare; `module.outputs.x` exist; loaded files exist."""
    file = bicep(path)
    modules = file.modules()
    for name, (module_path, _) in modules.items():
        assert module_path.is_file(), f"{path.name}: module {name} names {module_path}, which does not exist"
        declared = bicep(module_path).params()
        passed = set(file.module_params(name))
        assert passed <= set(declared), f"{path.name}: module {name} passes unknown {sorted(passed - set(declared))}"
        required = {param for param, optional in declared.items() if not optional}
        assert required <= passed, f"{path.name}: module {name} lacks required {sorted(required - passed)}"
    tokens = file.tokens
    for i, token in enumerate(tokens[:-3]):
        if (
            token.kind == "ident"
            and token.text in modules
            and tokens[i + 1].text == "."
            and tokens[i + 2].text == "outputs"
        ):
            output = tokens[i + 4].text
            assert output in bicep(modules[token.text][0]).declarations("output"), (
                f"{path.name}, line {token.line}: module {token.text} has no output {output}"
            )
        if token.text in ("loadJsonContent", "loadTextContent") and tokens[i + 1].text == "(":
            loaded = path.parent / tokens[i + 2].text
            assert loaded.is_file(), f"{path.name}, line {token.line}: {loaded} does not exist"


# --- the Bicep files are well formed --------------------------------------------------------------------------------


def test_there_are_bicep_files_to_check() -> None:
    assert {MAIN, SUBSCRIPTIONS_BICEP} <= set(BICEP_FILES)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_brackets_balance_and_strings_close(path: Path) -> None:
    check_brackets(path)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_names_are_declared_and_used(path: Path) -> None:
    check_names(path)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_modules_get_the_params_they_declare_and_have_the_outputs_used(path: Path) -> None:
    check_modules(path)


@pytest.mark.parametrize(
    ("source", "check"),
    [
        ("param a string\nvar b = {\n  c: a\n\noutput d object = b\n", check_brackets),
        ("param a string\nvar b = [\n  a\n}\n", check_brackets),
        ("param a string = 'x\n", check_brackets),
        ("param a string\nvar b = '${a\n", check_brackets),
        ("param a string\noutput b string = c\n", check_names),
        ("param a string\noutput b string = '${c}'\n", check_names),
        ("param a string\noutput b string = 'x'\n", check_names),
        ("module m 'missing.bicep' = {\n  name: 'm'\n  params: {}\n}\n", check_modules),
    ],
    ids=[
        "unclosed-brace",
        "mismatched",
        "unclosed-string",
        "unclosed-interpolation",
        "undeclared",
        "undeclared-in-interpolation",
        "unused-param",
        "missing-module",
    ],
)
def test_the_reader_catches_the_mistakes_it_looks_for(tmp_path: Path, source: str, check: object) -> None:
    path = tmp_path / "broken.bicep"
    path.write_text(source)
    with pytest.raises(AssertionError):
        check(path)  # type: ignore[operator]


def test_the_reader_accepts_what_bicep_accepts(tmp_path: Path) -> None:
    path = tmp_path / "fine.bicep"
    path.write_text(
        "// a comment with a ' quote\n@description('It\\'s {not} \\${code}')\nparam a string\n"
        "var b = {\n  c: '${a}-${replace(a, 'x', 'y')}'\n  'd-e': [for (f, i) in [1, 2]: f + i]\n"
        "  g: map([a], h => toUpper(h))\n}\noutput j object = b\n"
    )
    check_brackets(path)
    check_names(path)


# --- app settings ---------------------------------------------------------------------------------------------------


def settings_the_code_reads() -> set[str]:
    """Setting names in shared/settings.py, and names read literally from the environment in shared/ and functions/."""
    names = {
        value
        for name, value in vars(settings_module).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", value)
    }
    literal_read = re.compile(r"""(?:environ\.get|getenv|env\.get|environ\[)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
    for source in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "functions").rglob("*.py"), ROOT / "function_app.py"]:
        names |= set(literal_read.findall(source.read_text(encoding="utf-8")))
    return names - NOT_APP_SETTINGS


def test_every_setting_the_code_reads_is_set() -> None:
    names = settings_the_code_reads()
    assert {"AUTOPILOT_ML_BACKEND", "AUTOPILOT_AZUREML_WORKSPACE", "AUTOPILOT_RECONCILE_SCHEDULE"} <= names
    missing = names - set(app_settings())
    assert not missing, f"infra/main.bicep appSettings lacks {sorted(missing)}"


def test_storage_is_identity_based_with_the_user_assigned_identity() -> None:
    values = app_settings()
    assert "AzureWebJobsStorage" not in values, "a value in AzureWebJobsStorage would win over the identity settings"
    assert values["AzureWebJobsStorage__credential"] == "managedidentity"
    assert values["AzureWebJobsStorage__accountName"] == "storage . outputs . name"
    assert values["AzureWebJobsStorage__clientId"] == "identity . outputs . clientId"
    # DefaultAzureCredential picks a user-assigned identity only when AZURE_CLIENT_ID names it.
    assert values["AZURE_CLIENT_ID"] == "identity . outputs . clientId"
    assert values["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${...};Authorization=AAD ${ identity . outputs . clientId }"
    )
    assert not FORBIDDEN_SETTINGS & set(values), "Flex Consumption rejects these settings"


def production_environment() -> dict[str, str]:
    """The app settings as the app would see them: literals as written, params as their defaults, the rest made up."""
    main = bicep(MAIN)
    params = main.declarations("param")
    made_up = {"AzureWebJobsStorage__accountName": "stexample0000001", "AUTOPILOT_AZUREML_SUBSCRIPTION_ID": "0000"}
    env = {}
    for key, (start, end) in main.object_of("var", "appSettings").items():
        tokens = main.tokens[start : end + 1]
        texts = [t.text for t in tokens]
        if len(tokens) == 1 and tokens[0].kind == "string":
            env[key] = tokens[0].text
        elif len(tokens) == 1 and texts[0] in params:
            env[key] = main.literal_default(texts[0]) or made_up.get(key, "x")
        elif texts[:2] == ["string", "("] and texts[2] in params:
            env[key] = main.literal_default(texts[2]) or "1"
        else:
            env[key] = made_up.get(key, "computed-at-deployment")
    return env


def test_production_settings_are_valid_for_the_code() -> None:
    env = production_environment()
    settings = Settings.from_env(env)
    assert settings.ml_backend == "azureml"
    assert isinstance(settings.storage_connection, IdentityStorage)
    assert settings.storage_connection.managed_identity
    assert settings.storage_connection.blob_service_uri == "https://stexample0000001.blob.core.windows.net"
    # The timers' NCRONTAB schedules have six fields (azure-facts.md, "Timer schedules").
    for name in (settings_module.CLEANUP_SCHEDULE, settings_module.RECONCILE_SCHEDULE):
        assert len(env[name].split()) == 6, f"{name}={env[name]!r} is not a six-field NCRONTAB schedule"


def test_names_in_the_template_default_to_the_codes_defaults() -> None:
    main = bicep(MAIN)
    values = app_settings()
    defaults = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    for setting, default in (
        (settings_module.TRAINING_CONTAINER, defaults.training_container),
        (settings_module.ARTIFACTS_CONTAINER, defaults.artifacts_container),
        (settings_module.RUNS_TABLE, defaults.runs_table),
        (settings_module.FOLDERS_TABLE, defaults.folders_table),
        (settings_module.REJECTED_TABLE, defaults.rejected_table),
        (settings_module.CLEANUP_TABLE, defaults.cleanup_table),
        (settings_module.AZUREML_FINETUNE_INSTANCE_TYPE, defaults.azureml_finetune_instance_type),
        (settings_module.AZUREML_INFERENCE_INSTANCE_TYPE, defaults.azureml_inference_instance_type),
        (settings_module.AZUREML_REGISTRY, defaults.azureml_registry),
    ):
        param = values[setting]
        assert main.literal_default(param) == default, f"param {param} (for {setting}) should default to {default!r}"


def test_the_function_app_is_flex_consumption_python_with_the_settings() -> None:
    main, api = bicep(MAIN), bicep(INFRA / "app" / "api.bicep")
    assert main.literal_default("pythonVersion") == "3.11"
    assert "appSettings" in main.module_params("api")
    plan = api.object_of("resource", "plan")
    assert api.text_of(*plan["sku"]) == "{ tier : FlexConsumption name : FC1 }"
    site = api.object_of("resource", "functionApp")
    properties = {k: api.text_of(*v) for k, v in api.object_entries(*site["properties"]).items()}
    assert "for setting in items ( appSettings )" in properties["siteConfig"]
    assert "UserAssignedIdentity" in properties["functionAppConfig"]
    assert "runtime : { name : python version : pythonVersion }" in properties["functionAppConfig"]


# --- storage: containers, queues, tables ----------------------------------------------------------------------------


def storage_module_params() -> dict[str, str]:
    main = bicep(MAIN)
    return {key: main.text_of(*span) for key, span in main.module_params("storage").items()}


def test_every_queue_and_its_poison_queue_is_created() -> None:
    queues = bicep(MAIN).array_of("stageQueues")
    assert storage_module_params()["queues"] == "stageQueues"
    for queue in ALL_QUEUES:
        assert queue in queues, f"queue {queue} is not created"
        assert f"{queue}-poison" in queues, f"poison queue {queue}-poison is not created"


def test_every_table_and_container_the_code_names_is_created() -> None:
    values = app_settings()
    params = storage_module_params()
    for setting in (
        settings_module.RUNS_TABLE,
        settings_module.FOLDERS_TABLE,
        settings_module.REJECTED_TABLE,
        settings_module.CLEANUP_TABLE,
    ):
        assert values[setting] in params["tables"].split(), f"the table of {setting} is not created"
    for setting in (settings_module.TRAINING_CONTAINER, settings_module.ARTIFACTS_CONTAINER):
        assert values[setting] in params["containers"].split(), f"the container of {setting} is not created"
    # The Flex Consumption deployment package and Event Grid's dead letters have their containers too.
    assert {"deploymentContainerName", "deadLetterContainerName"} <= set(params["containers"].split())


def test_storage_account_allows_no_keys_and_no_public_blobs() -> None:
    storage = bicep(INFRA / "app" / "storage.bicep")
    account = storage.object_of("resource", "storage")
    properties = {k: storage.text_of(*v) for k, v in storage.object_entries(*account["properties"]).items()}
    assert properties["allowSharedKeyAccess"] == "false"
    assert properties["allowBlobPublicAccess"] == "false"


# --- Event Grid -----------------------------------------------------------------------------------------------------


def event_grid_functions() -> set[str]:
    """Names of the app's functions with an Event Grid trigger."""
    return {
        function.get_function_name()
        for function in app_functions()
        if any(binding.get_dict_repr()["type"] == "eventGridTrigger" for binding in function.get_bindings())
    }


def test_every_event_grid_function_has_a_subscription_in_the_shared_file() -> None:
    document = json.loads(SUBSCRIPTIONS_JSON.read_text(encoding="utf-8"))
    targets = set()
    for subscription in document["subscriptions"]:
        url = subscription["destination"]["endpointUrl"]
        assert url.startswith("{functions_url}/runtime/webhooks/EventGrid?functionName="), url
        targets.add(url.rsplit("functionName=", 1)[1])
        # The template takes the delivery attempts from the file: each subscription must say them.
        assert subscription["retryPolicy"]["maxDeliveryAttempts"] >= 1
    functions = event_grid_functions()
    assert "dataset_arrival" in functions and "ml_job_events" in functions
    assert functions <= targets, f"no subscription in {SUBSCRIPTIONS_JSON.name} for {sorted(functions - targets)}"


def test_the_template_builds_every_subscription_from_the_shared_file() -> None:
    template = bicep(SUBSCRIPTIONS_BICEP)
    loaded = [i for i, t in enumerate(template.tokens) if t.text == "loadJsonContent"]
    assert len(loaded) == 1, "the template does not load eventgrid.subscriptions.json"
    assert (SUBSCRIPTIONS_BICEP.parent / template.tokens[loaded[0] + 2].text).resolve() == SUBSCRIPTIONS_JSON
    # One module per subscription of the file, on the topic the file names, with its filter and retry count.
    index = template.declarations("module")["eventSubscriptions"]
    assert "for spec in subscriptionsFile . subscriptions" in template.text_of(index, index + 12)
    params = {key: template.text_of(*span) for key, span in template.module_params("eventSubscriptions").items()}
    assert params["systemTopicName"] == "systemTopics [ spec . topic ] . name"
    assert "spec . destination . endpointUrl" in params["endpointUrl"] and "eventGridSystemKey" in params["endpointUrl"]
    subscription = bicep(INFRA / "app" / "event-subscription.bicep")
    body = subscription.object_of("resource", "eventSubscription")
    properties = {k: subscription.text_of(*v) for k, v in subscription.object_entries(*body["properties"]).items()}
    assert properties["filter"] == "spec . filter"
    assert "maxDeliveryAttempts : spec . retryPolicy . maxDeliveryAttempts" in properties["retryPolicy"]
    assert "eventTimeToLiveInMinutes : eventTimeToLiveInMinutes" in properties["retryPolicy"]
    assert "blobContainerName : deadLetterContainerName" in properties["deadLetterWithResourceIdentity"]
    # Every topic of the file is mapped to a system topic in Azure.
    document = json.loads(SUBSCRIPTIONS_JSON.read_text(encoding="utf-8"))
    topics = set(template.object_of("var", "systemTopics"))
    assert set(document["topics"]) <= topics, (
        f"topics without a system topic: {sorted(set(document['topics']) - topics)}"
    )


def test_subscription_filters_in_azure_equal_the_local_stand_ins() -> None:
    """Replacing the placeholders as the template does gives exactly the filters the local stand-in applies."""
    template = bicep(SUBSCRIPTIONS_BICEP)
    spec = template.module_params("eventSubscriptions")["spec"]
    (placeholder,) = template.strings_in(*spec)
    assert template.text_of(*spec) == f"json ( replace ( string ( spec ) , {placeholder} , trainingContainerName ) )"
    document = json.loads(SUBSCRIPTIONS_JSON.read_text(encoding="utf-8"))
    placeholders = set(re.findall(r"\{env:[^{}]*\}", json.dumps(document["subscriptions"])))
    assert placeholders <= {placeholder}, f"the template does not replace {sorted(placeholders - {placeholder})}"
    container = bicep(MAIN).literal_default("trainingContainerName")
    assert container is not None
    local = load_subscriptions(SUBSCRIPTIONS_JSON, env={"AUTOPILOT_TRAINING_CONTAINER": container})
    for subscription, raw in zip(local.subscriptions, document["subscriptions"], strict=True):
        in_azure = json.loads(json.dumps(raw).replace(placeholder, container))
        azure_filter = in_azure.get("filter", {})
        assert in_azure["name"] == subscription.name
        assert tuple(azure_filter.get("includedEventTypes", ())) == (subscription.filter.included_event_types or ())
        assert azure_filter.get("subjectBeginsWith", "") == subscription.filter.subject_begins_with
        assert azure_filter.get("subjectEndsWith", "") == subscription.filter.subject_ends_with
        assert azure_filter.get("isSubjectCaseSensitive", False) == subscription.filter.is_subject_case_sensitive
        assert in_azure["retryPolicy"]["maxDeliveryAttempts"] == subscription.max_delivery_attempts


# --- roles ----------------------------------------------------------------------------------------------------------


def role_assignments() -> set[tuple[str, str, str]]:
    """(role id, resource type of the scope, principal expression) of every role assignment under infra/."""
    found = set()
    for path in BICEP_FILES:
        file = bicep(path)
        for index in file.resources_of_type("Microsoft.Authorization/roleAssignments").values():
            header = file.text_of(index, file.block_after(index)[0])
            body = file.object_entries(*file.block_after(index))
            properties = file.object_entries(*body["properties"])
            scope_type = file.resource_type(file.text_of(*body["scope"]))
            principal = file.text_of(*properties["principalId"])
            role = file.tokens[properties["roleDefinitionId"][1] - 1].text
            loop = re.search(rf"for {role} in (\w+)", header)
            roles = file.array_of(loop.group(1)) if loop else [role]
            for role_name in roles:
                found.add((file.var_string(role_name) or role_name, scope_type, principal))
    return found


def test_every_role_the_app_needs_is_assigned_to_the_right_principal_and_scope() -> None:
    assignments = role_assignments()
    for role, scope_type, principal in REQUIRED_ASSIGNMENTS:
        assert (ROLE_IDS[role], scope_type, principal) in assignments, f"{role} on {scope_type} for {principal}"
    # The developer gets storage data roles only, and only the app gets roles on the workspace.
    workspace_principals = {p for _, scope, p in assignments if scope.endswith("/workspaces")}
    assert workspace_principals == {"appIdentityPrincipalId"}


def docs_roles() -> set[str]:
    """Roles in the roles table of docs/azure.md, section "Deploy with azd up"."""
    text = (ROOT / "docs" / "azure.md").read_text(encoding="utf-8")
    lines = text.split("## Deploy with azd up", 1)[1].split("\n## ", 1)[0].splitlines()
    header = next(i for i, line in enumerate(lines) if line.lower().startswith("| role |"))
    roles = set()
    for line in lines[header + 2 :]:  # past the header and its |---| line, to the end of the table
        if not line.startswith("|"):
            break
        roles.add(line.split("|")[1].strip())
    return roles


def test_every_role_the_docs_name_is_assigned_and_the_other_way_round() -> None:
    documented = docs_roles()
    unknown = documented - set(ROLE_IDS)
    assert not unknown, f"docs/azure.md names roles this test has no id for: {sorted(unknown)}"
    assigned_ids = {role for role, _, _ in role_assignments()}
    assert {ROLE_IDS[role] for role in documented} == assigned_ids


# --- azure.yaml and the postdeploy hook -----------------------------------------------------------------------------


def azure_yaml() -> dict[str, object]:
    document = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_azure_yaml_names_the_infra_the_function_app_and_the_hooks() -> None:
    document = azure_yaml()
    assert document["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert (ROOT / "infra" / "main.bicep").is_file() and (ROOT / "infra" / "main.parameters.json").is_file()
    services = document["services"]
    assert isinstance(services, dict) and len(services) == 1
    ((name, service),) = services.items()
    assert service == {"project": ".", "language": "python", "host": "function"}
    # azd finds the app to deploy by its azd-service-name tag.
    assert bicep(INFRA / "app" / "api.bicep").literal_default("serviceName") == name
    hooks = document["hooks"]["postdeploy"]  # type: ignore[index]
    for platform, script in (("posix", "infra/hooks/postdeploy.sh"), ("windows", "infra/hooks/postdeploy.ps1")):
        assert hooks[platform]["run"] == f"./{script}" and (ROOT / script).is_file()
        assert hooks[platform]["continueOnError"] is False


def test_main_parameters_map_only_params_main_bicep_declares() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    declared = bicep(MAIN).params()
    assert set(parameters) <= set(declared)
    assert {name for name, optional in declared.items() if not optional} <= set(parameters)


def hook_parameters(script: Path) -> set[str]:
    """Names of the `--parameters name=value` a hook passes."""
    text = script.read_text(encoding="utf-8").split("--parameters", 1)[1]
    return set(re.findall(r"^\s*(\w+)=", text, flags=re.MULTILINE))


def test_hooks_pass_the_subscription_template_its_params() -> None:
    declared = bicep(SUBSCRIPTIONS_BICEP).params()
    required = {name for name, optional in declared.items() if not optional}
    for script in (INFRA / "hooks" / "postdeploy.sh", INFRA / "hooks" / "postdeploy.ps1"):
        passed = hook_parameters(script)
        assert required <= passed <= set(declared), f"{script.name} passes {sorted(passed)}"
        assert "infra/eventgrid-subscriptions.bicep" in script.read_text(encoding="utf-8")


@pytest.mark.skipif(sys.platform == "win32", reason="runs the POSIX hook with sh")
def test_posix_hook_subscribes_with_the_system_key_and_the_deployed_names(tmp_path: Path) -> None:
    """GIVEN azd and az stand-ins holding main.bicep's outputs, WHEN the hook runs, THEN it deploys the template."""
    outputs = bicep(MAIN).declarations("output")
    (tmp_path / "azd.env").write_text("".join(f'{name}="{name.lower()}-value"\n' for name in outputs))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "azd").write_text(f'#!/bin/sh\n[ "$1 $2" = "env get-values" ] && cat "{tmp_path / "azd.env"}"\n')
    (bin_dir / "az").write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2 $3" = "functionapp keys list" ]; then echo system-key-1; exit 0; fi\n'
        'if [ "$1 $2 $3" = "deployment group create" ]; then\n'
        f'  printf "%s\\n" "$@" > "{tmp_path / "az.log"}"; exit 0\n'
        "fi\n"
        "exit 2\n"
    )
    for stand_in in bin_dir.iterdir():
        stand_in.chmod(0o755)
    environment = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        ["sh", "infra/hooks/postdeploy.sh"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    arguments = (tmp_path / "az.log").read_text().splitlines()
    assert arguments[arguments.index("--template-file") + 1] == "infra/eventgrid-subscriptions.bicep"
    assert arguments[arguments.index("--resource-group") + 1] == "azure_resource_group-value"
    passed = dict(argument.split("=", 1) for argument in arguments if re.fullmatch(r"\w+=.*", argument))
    assert passed["eventGridSystemKey"] == "system-key-1"
    assert passed["trainingContainerName"] == "autopilot_training_container-value"
    assert passed["mlSystemTopicName"] == "eventgrid_ml_topic_name-value"

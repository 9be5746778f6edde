"""Results for every language this host offers: stdout, stderr, exit codes, stdin, compile
errors, runtime errors, timeouts."""

from __future__ import annotations

import shutil
import time

import pytest

from crdt_server.execution import ExecutionService, InvalidRequest, UnknownLanguage

from .execution_fixtures import anyio_backend, service

__all__ = ["anyio_backend", "service"]  # fixtures

pytestmark = pytest.mark.anyio

# Each program reads one word from stdin, prints it upper-cased on stdout, "err" on stderr, exits 3.
ECHO = {
    "python": "import sys\nword = sys.stdin.read().strip()\nprint('out:' + word.upper())\n"
    "print('err', file=sys.stderr)\nsys.exit(3)\n",
    "javascript": "const w = require('fs').readFileSync(0, 'utf8').trim();\nconsole.log('out:' + w.toUpperCase());\n"
    "console.error('err');\nprocess.exit(3);\n",
    "typescript": "const w: string = require('fs').readFileSync(0, 'utf8').trim();\n"
    "console.log('out:' + w.toUpperCase());\nconsole.error('err');\nprocess.exit(3);\n",
    "bash": 'read -r word\necho "out:${word^^}"\necho err >&2\nexit 3\n',
    "c": '#include <stdio.h>\n#include <ctype.h>\nint main(void) {\n  char w[64];\n  if (scanf("%63s", w) != 1) return 9;\n'
    '  for (char *p = w; *p; p++) *p = toupper(*p);\n  printf("out:%s\\n", w);\n  fprintf(stderr, "err\\n");\n'
    "  return 3;\n}\n",
    "cpp": "#include <algorithm>\n#include <iostream>\n#include <string>\nint main() {\n  std::string w;\n"
    "  std::cin >> w;\n  std::transform(w.begin(), w.end(), w.begin(), ::toupper);\n"
    '  std::cout << "out:" << w << std::endl;\n  std::cerr << "err" << std::endl;\n  return 3;\n}\n',
    "java": "import java.io.*;\npublic class Main {\n  public static void main(String[] a) throws IOException {\n"
    "    String w = new BufferedReader(new InputStreamReader(System.in)).readLine().trim();\n"
    '    System.out.println("out:" + w.toUpperCase());\n    System.err.println("err");\n    System.exit(3);\n  }\n}\n',
    "go": 'package main\n\nimport (\n\t"bufio"\n\t"fmt"\n\t"os"\n\t"strings"\n)\n\nfunc main() {\n'
    '\tline, _ := bufio.NewReader(os.Stdin).ReadString(\'\\n\')\n'
    '\tfmt.Println("out:" + strings.ToUpper(strings.TrimSpace(line)))\n\tfmt.Fprintln(os.Stderr, "err")\n'
    "\tos.Exit(3)\n}\n",
    "rust": "use std::io::Read;\nfn main() {\n  let mut s = String::new();\n  std::io::stdin().read_to_string(&mut s).unwrap();\n"
    '  println!("out:{}", s.trim().to_uppercase());\n  eprintln!("err");\n  std::process::exit(3);\n}\n',
}

BROKEN = {
    "c": "int main(void) { return undefined_variable; }\n",
    "cpp": "int main() { std::cout << 1; }\n",
    "java": "public class Main { public static void main(String[] a) { int x = \"no\"; } }\n",
    "go": "package main\nfunc main() { undefined() }\n",
    "rust": "fn main() { let x: i32 = \"no\"; }\n",
    "typescript": "const x: number = 'no';\nconsole.log(x);\n",
}

INFINITE = {
    "python": "while True:\n    pass\n",
    "javascript": "for (;;) {}\n",
    "typescript": "for (;;) {}\n",
    "bash": "while :; do :; done\n",
    "c": "int main(void) { volatile int x = 0; for (;;) x++; }\n",
    "cpp": "int main() { volatile int x = 0; for (;;) x++; }\n",
    "java": "public class Main { public static void main(String[] a) { while (true) {} } }\n",
    "go": "package main\nfunc main() { for {} }\n",
    "rust": "fn main() { loop { std::hint::black_box(0); } }\n",
}

# Toolchain binary -> language that must then be offered (python and javascript always).
EXPECTED = {"bash": "bash", "gcc": "c", "g++": "cpp", "javac": "java", "go": "go"}


def offered(service: ExecutionService) -> list[str]:
    return [lang.name for lang in service.languages()]


async def test_languages_listed_with_versions(service: ExecutionService) -> None:
    names = offered(service)
    assert {"python", "javascript"} <= set(names), service.skipped_languages
    for binary, name in EXPECTED.items():
        if shutil.which(binary, path="/usr/local/bin:/usr/bin:/bin"):
            assert name in names, service.skipped_languages
    if shutil.which("rustc") or shutil.which("rustc", path="/root/.cargo/bin"):
        assert "rust" in names, service.skipped_languages
    for lang in service.languages():
        assert lang.version and lang.version[0].isdigit(), lang
        if lang.name in ("c", "cpp", "java", "go", "rust"):
            assert lang.compiled, lang
        elif lang.name in ("python", "javascript", "bash"):
            assert not lang.compiled, lang
    assert all(name in ECHO for name in names)


@pytest.mark.parametrize("language", list(ECHO))
async def test_stdout_stderr_exit_code_and_stdin(service: ExecutionService, language: str) -> None:
    if language not in offered(service):
        pytest.skip(f"{language} is not installed on this host: {service.skipped_languages.get(language)}")
    result = await service.run(language=language, code=ECHO[language], stdin="hello\n", timeout=10)
    assert result.stdout == "out:HELLO\n", result
    assert result.stderr == "err\n", result
    assert result.exit_code == 3, result
    assert not result.timed_out and not result.truncated and not result.compile_error
    assert result.sandbox == "full" and result.language == language


@pytest.mark.parametrize("language", list(BROKEN))
async def test_compile_error_is_a_result(service: ExecutionService, language: str) -> None:
    if language not in offered(service):
        pytest.skip(f"{language} is not installed on this host")
    result = await service.run(language=language, code=BROKEN[language], timeout=5)
    assert result.exit_code != 0, result
    assert result.stdout == ""
    assert "error" in result.stderr.lower(), result
    if language != "typescript" or result.compile_output:
        assert result.compile_error, result
        assert result.compile_output == result.stderr


@pytest.mark.parametrize("language", list(INFINITE))
async def test_infinite_loop_times_out(service: ExecutionService, language: str) -> None:
    if language not in offered(service):
        pytest.skip(f"{language} is not installed on this host")
    started = time.monotonic()
    result = await service.run(language=language, code=INFINITE[language], timeout=1)
    assert result.timed_out and result.exit_code == 137, result
    assert not result.compile_error
    compiled = next(lang.compiled for lang in service.languages() if lang.name == language)
    assert time.monotonic() - started < 1 + 3 + (5 if compiled else 0)  # compiling is not run time


async def test_runtime_error_and_aliases(service: ExecutionService) -> None:
    result = await service.run(language="py", code="raise ValueError('boom')\n")
    assert result.exit_code == 1 and "ValueError: boom" in result.stderr and result.language == "python"
    result = await service.run(language="node", code="throw new Error('boom')\n")
    assert result.exit_code == 1 and "Error: boom" in result.stderr and result.language == "javascript"
    result = await service.run(language="python", code="import os\nos.kill(os.getpid(), 9)\n")
    assert result.exit_code == 137 and not result.timed_out


async def test_unicode_and_large_stdin(service: ExecutionService) -> None:
    data = "héllo wörld ✓\n" * 20000  # ~340 KB: more than a pipe buffer
    code = "import sys\ndata = sys.stdin.read()\nprint(len(data), data[:13])\n"
    result = await service.run(language="python", code=code, stdin=data)
    assert result.stdout == f"{len(data)} héllo wörld ✓\n", result


async def test_java_public_class_name(service: ExecutionService) -> None:
    if "java" not in offered(service):
        pytest.skip("java is not installed on this host")
    code = 'public class Solution {\n  public static void main(String[] a) { System.out.println("sol"); }\n}\n'
    result = await service.run(language="java", code=code)
    assert result.stdout == "sol\n" and result.exit_code == 0, result


async def test_compile_time_does_not_count_against_run_timeout(service: ExecutionService) -> None:
    if "cpp" not in offered(service):
        pytest.skip("g++ is not installed on this host")
    code = "#include <bits/stdc++.h>\nint main() { std::vector<int> v{3, 1, 2}; std::sort(v.begin(), v.end());\n" \
           "  std::cout << v[0] << v[1] << v[2] << std::endl; }\n"
    result = await service.run(language="cpp", code=code, timeout=0.5)  # g++ alone needs ~1-2 s here
    assert result.stdout == "123\n" and not result.timed_out, result


async def test_compile_warnings_are_reported(service: ExecutionService) -> None:
    if "c" not in offered(service):
        pytest.skip("gcc is not installed on this host")
    result = await service.run(language="c", code='#include <stdio.h>\nint main(void) { int unused; puts("hi"); }\n')
    assert result.stdout == "hi\n" and result.exit_code == 0 and not result.compile_error
    assert "unused" in result.compile_output and result.stderr == ""


async def test_bad_requests(service: ExecutionService) -> None:
    with pytest.raises(UnknownLanguage):
        await service.run(language="cobol", code="DISPLAY 'HI'.")
    with pytest.raises(InvalidRequest):
        await service.run(language="python", code="print(1)", timeout=0)
    with pytest.raises(InvalidRequest):
        await service.run(language="python", code="#" * (service.settings.max_code_bytes + 1))
    with pytest.raises(InvalidRequest, match="at most"):  # above --run-timeout-max: refused, not clamped
        await service.run(language="python", code="print(1)", timeout=service.settings.max_timeout + 0.5)
    result = await service.run(language="python", code="print(1)", timeout=service.settings.max_timeout)
    assert result.stdout == "1\n"


async def test_result_json_is_camel_case(service: ExecutionService) -> None:
    result = await service.run(language="python", code="print(1)")
    data = result.as_json()
    assert data["exitCode"] == 0 and data["timedOut"] is False and data["sandbox"] == "full"
    assert {"durationMs", "compileError", "compileOutput", "oomKilled", "truncated"} <= set(data)

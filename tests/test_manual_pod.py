"""Every POD example of the original tastypy manual (seeds/002), as a test.

Each interactive session of the manual runs in its own Python process, in a
scratch working directory, with the manual's own relative path
``path/to/my.pod``. Adapted to Python 3 in the obvious way: ``print(...)``
where the manual's session echoed a value, and no ``u''`` prefixes. The
manual's own slips are fixed, each where it occurs:

* the "JSON only" session sets ``'integer-key'`` and then reads ``'foo'``;
  we read ``'integer-key'``;
* the "may not synchronize" example calls ``value['subkey1'].append('foo')``
  on an empty dict, which raises ``KeyError`` in any Python; we start from
  ``{'subkey1': []}``.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap

from conftest import run_python, spawn_python


def session(cwd, code: str, status: int = 0) -> str:
    """Run one interactive session of the manual; return what it printed."""
    result = run_python("from tastypy import POD\n" + textwrap.dedent(code), cwd=cwd)
    assert result.returncode == status, result.stderr
    return result.stdout


def test_data_stored_in_a_pod_is_preserved_after_the_program_exits(tmp_path):
    session(
        tmp_path,
        """
        my_pod = POD('path/to/my.pod')
        my_pod['foo'] = 'bar'
        exit()
        """,
    )
    out = session(
        tmp_path,
        """
        my_pod = POD('path/to/my.pod')
        print(my_pod['foo'])
        """,
    )
    assert out == "bar\n"
    assert (tmp_path / "path" / "to" / "my.pod").is_dir()


def test_json_only_gotchas(tmp_path):
    session(
        tmp_path,
        """
        my_pod = POD('path/to/my.pod')
        my_pod['integer-key'] = {1:'bar'}
        my_pod['tuple'] = ('baz', 42)
        exit()
        """,
    )
    out = session(
        tmp_path,
        """
        my_pod = POD('path/to/my.pod')
        print(my_pod['integer-key'])   # the manual reads 'foo' here: a slip
        print(my_pod['tuple'])
        """,
    )
    # The key 1 became a string (42 stays a number); the tuple became a list.
    assert out == "{'1': 'bar'}\n['baz', 42]\n"


def test_changes_made_through_the_pod_are_synchronized(tmp_path):
    session(
        tmp_path,
        """
        my_pod = POD('path/to/my.pod')
        my_pod['key'] = {}
        my_pod['key']['subkey1'] = 1 # __setitem__ called on dict, but only
        my_pod['key']['subkey2'] = []
        my_pod['key']['subkey2'].append(1)
        """,
    )
    out = session(tmp_path, "print(POD('path/to/my.pod')['key'])")
    assert out == "{'subkey1': 1, 'subkey2': [1]}\n"


def test_changes_made_through_another_reference_may_not_be_synchronized(tmp_path):
    session(
        tmp_path,
        """
        my_pod = POD('path/to/my.pod')
        value = {'subkey1': []}   # the manual starts from {}: a KeyError below
        my_pod['key'] = value   # This is ok
        value['subkey1'].append('foo')  # not seen, due to use of non-POD ref
        value['subkey2'] = 'baz'    # also not seen.
        """,
    )
    out = session(tmp_path, "print(POD('path/to/my.pod')['key'])")
    assert out == "{'subkey1': []}\n"
    # The way out, also in the manual: tell the POD about the key.
    session(
        tmp_path,
        """
        my_pod = POD('path/to/my.pod')
        value = my_pod['key']
        my_pod.sync()
        value['subkey2'] = 'baz'    # through a reference kept across a sync
        my_pod.update('key')
        """,
    )
    out = session(tmp_path, "print(POD('path/to/my.pod')['key'])")
    assert out == "{'subkey1': [], 'subkey2': 'baz'}\n"


def test_update_key_synchronizes_that_key_at_once(tmp_path):
    # The writer stays alive while another process reads: update(key) wrote.
    writer = spawn_python(
        """
        import sys
        from tastypy import POD
        my_pod = POD('path/to/my.pod')
        my_pod['mutable'] = [1,2,3]
        ref = my_pod['mutable']
        my_pod.sync()
        ref.append(4)    # a change the POD cannot see ...
        my_pod.update('mutable')    # ... synchronized explicitly
        print("updated", flush=True)
        sys.stdin.readline()
        """,
        cwd=tmp_path,
        stdin=subprocess.PIPE,
    )
    try:
        assert writer.stdout.readline() == "updated\n", writer.stderr.read()
        out = session(tmp_path, "print(POD('path/to/my.pod')['mutable'])")
        assert out == "[1, 2, 3, 4]\n"
    finally:
        writer.communicate("\n", timeout=60)
    assert writer.returncode == 0


def test_hold_sync_and_unhold(tmp_path):
    probe = "print(len(POD('path/to/my.pod')))"
    writer = spawn_python(
        """
        import sys
        from tastypy import POD
        my_pod = POD('path/to/my.pod', sync_at=10)
        def step(name):
            print(name, flush=True)
            sys.stdin.readline()
        my_pod.hold()                  # suspend automatic synchronization
        for i in range(25):
            my_pod[i] = i
        step("held")
        my_pod.sync()                  # a one-time synchronization
        for i in range(25, 50):
            my_pod[i] = i
        step("synced once")
        my_pod.unhold()                # resume, and synchronize what is outstanding
        step("unheld")
        """,
        cwd=tmp_path,
        stdin=subprocess.PIPE,
    )
    try:
        seen = []
        for expected in ("held", "synced once", "unheld"):
            assert writer.stdout.readline() == expected + "\n", writer.stderr.read()
            seen.append(session(tmp_path, probe))
            writer.stdin.write("\n")
            writer.stdin.flush()
        assert seen == ["0\n", "25\n", "50\n"]
    finally:
        writer.communicate(timeout=60)
    assert writer.returncode == 0


def test_pods_synchronize_at_exit_even_after_a_crash_or_ctrl_c(tmp_path):
    session(
        tmp_path,
        """
        my_pod = POD('path/to/my.pod')
        my_pod['before the crash'] = True
        raise RuntimeError("the program crashes")
        """,
        status=1,
    )
    interrupted = spawn_python(
        """
        import time
        from tastypy import POD
        my_pod = POD('path/to/my.pod')
        my_pod['before ctrl-c'] = True
        print("ready", flush=True)
        time.sleep(60)
        """,
        cwd=tmp_path,
    )
    assert interrupted.stdout.readline() == "ready\n", interrupted.stderr.read()
    interrupted.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = interrupted.communicate(timeout=60)
    assert "KeyboardInterrupt" in err
    out = session(tmp_path, "print(dict(POD('path/to/my.pod')))")
    assert out == "{'before the crash': True, 'before ctrl-c': True}\n"

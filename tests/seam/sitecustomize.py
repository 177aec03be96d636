"""The kill seam of the repair tests, outside the shipped program: with this folder on PYTHONPATH
and ATTN_DOCTOR_KILL_AT set ("STATE:STEP" or "output:STEP:TEXT"), the doctor's process ends
abruptly (exit 137, as a kill -9 would leave it) at that journal point of that step (1-based), or
when that step's command prints a line containing TEXT; with ATTN_DOCTOR_KILL_WITH=SIGINT it
sends itself a real SIGINT there instead (Ctrl-C). Other processes are left alone."""

import os
import signal

_POINT = os.environ.get("ATTN_DOCTOR_KILL_AT", "")

if _POINT and os.environ.get("ATTN_DOCTOR_KILL_WITH") == "SIGINT":
    # Ctrl-C as a terminal delivers it, also where the suite runs with SIGINT ignored (nohup, a
    # background job, a CI runner): a Python started so installs no handler of its own
    signal.signal(signal.SIGINT, signal.default_int_handler)

if _POINT:
    try:
        from attn_doctor.actions import runner
    except ImportError:  # a target environment's own Python: nothing to arm
        runner = None  # type: ignore[assignment]

    def _kill(state: str, number: int, line: str = "") -> None:
        wanted_state, _, rest = _POINT.partition(":")
        wanted_number, _, text = rest.partition(":")
        if state == wanted_state and str(number) == wanted_number and text in line:
            if os.environ.get("ATTN_DOCTOR_KILL_WITH") == "SIGINT":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                os._exit(137)

    if runner is not None:
        runner.checkpoint = _kill

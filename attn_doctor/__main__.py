"""`python -m attn_doctor` runs the same CLI as the `attn-doctor` script."""

from attn_doctor.cli import main

main()

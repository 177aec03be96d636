"""`python -m attn_doctor` runs the same command as the `attn-doctor` script."""

from attn_doctor.entry import main

main()

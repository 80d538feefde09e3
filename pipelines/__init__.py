"""Ray Data jobs and Ray jobs: build, synthetic rules, teacher SRL."""

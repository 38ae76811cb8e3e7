"""Fidelity on real data: the MoP paper's text table and survey fidelity, with the embedded LM.

The entry point of the fidelity benchmark; the code is the package ``fidelity_suite/`` beside this file (its
docstring describes the two parts, the protocols and the RESULT line).

    python benchmarks/fidelity.py --quick            # 24.4 min on 2 bf16 Xeon cores (2026-12-07, part warm; see README)
    python benchmarks/fidelity.py                    # full sizes (2 bf16 cores: text part 33-42 min, survey part 63-85)
    python benchmarks/fidelity.py --quick --dev      # tuning: dev splits only (never the reported test)
    python benchmarks/fidelity.py --quick --only text --set text.tau_init=0.8
"""

from fidelity_suite.cli import main

if __name__ == "__main__":
    main()

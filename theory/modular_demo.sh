#!/usr/bin/env bash
# Experiment definition: the modular-addition theory figures (paper's Fig. 3 configuration:
# N = 1000, P = 401, sa2 = 0.002/N, gamma = 1e-4).  Results to results/, figures to figures/.
set -euo pipefail
GROKPHASE=${GROKPHASE:-grokphase}
mkdir -p results figures
# Fig. 3: per-mode action along Phi = Psi in each phase and the target component vs sigma^2
"$GROKPHASE" theory modular --s2-sweep 0.1:0.3:201 --transitions \
    --plot figures/modular_theory.png --out results/modular_theory.nc
# phase diagram over (sigma^2, N) with sa2 = 0.002/N, saddle method
"$GROKPHASE" theory phase-diagram modular --x s2:0.1:0.3:64 --y N:500:2000:64 \
    --plot figures/phase_diagram_modular.png --out results/phase_diagram_modular.nc
# NNGP baseline: the target needs O(P^2) training pairs
"$GROKPHASE" theory gp-modular --Ps 11,23,101,401 --plot figures/gp_modular.png --out results/gp_modular.nc

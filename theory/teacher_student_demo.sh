#!/usr/bin/env bash
# Experiment definition: the teacher-student theory figures of `make demo` (paper configuration,
# App. C at beta = 1).  Results go to results/ (netCDF with provenance), figures to figures/.
set -euo pipefail
GROKPHASE=${GROKPHASE:-grokphase}
mkdir -p results figures
# Fig. 2 theory half: betas 1/8, 1/2, 1, 2, 8, the scaling limit and the GP baseline
"$GROKPHASE" theory teacher-student --s2-sweep 0.05:0.35:61 --transition \
    --plot figures/teacher_student_theory.png --out results/teacher_student_theory.nc
# phase diagram over (sigma^2, N) with sa2 = 8/N, finite d, with the scaling-limit boundary
"$GROKPHASE" theory phase-diagram teacher-student --x s2:0.05:0.4:64 --y N:100:3000:64 \
    --plot figures/phase_diagram_ts.png --out results/phase_diagram_ts.nc
# GP (infinite-width) learning curves: the cubic part needs n = O(d^3)
"$GROKPHASE" theory gp-teacher-student --s2-sweep 0.1:0.3:3 --n-sweep 10:1e10:91:log \
    --plot figures/gp_teacher_student.png --out results/gp_teacher_student.nc

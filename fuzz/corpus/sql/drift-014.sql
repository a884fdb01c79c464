SELECT psi(CAST(NULL AS DOUBLE), true) AS psi FROM decisions

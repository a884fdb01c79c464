SELECT psi(confidence, true) AS psi, ks(confidence, true) AS ks FROM decisions

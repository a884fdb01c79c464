SELECT psi(confidence, cur) AS psi, ks(confidence, cur) AS ks
FROM (SELECT confidence, true AS cur FROM decisions UNION ALL SELECT confidence, false FROM decisions)

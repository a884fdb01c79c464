SELECT psi('high', 'maybe') FROM decisions

"""Writes sensors.csv: a tiny long-format classification example (30 machines, two sensors). Each machine
ran a shift of its own length (8 to 16 steps): series of different lengths are fine. Faulty machines heat
up and vibrate more over time. Run: python examples/data/make_sensors.py"""

from pathlib import Path

import numpy as np

rng = np.random.default_rng(7)
lines = ["series_id,step,temperature,vibration,label"]
for machine in range(30):
    fault = machine % 3 == 0
    for step in range(int(rng.integers(8, 17))):
        temperature = 60 + rng.normal(0, 1.0) + (0.8 * step if fault else 0.0)
        vibration = 0.2 + abs(rng.normal(0, 0.05)) + (0.03 * step if fault else 0.0)
        label = "fault" if fault else "normal"
        lines.append(f"m{machine:02d},{step},{temperature:.2f},{vibration:.3f},{label}")
(Path(__file__).parent / "sensors.csv").write_text("\n".join(lines) + "\n")

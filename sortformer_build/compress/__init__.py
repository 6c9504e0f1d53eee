"""Mixed-bit compression chosen by measurement.

`groups` names the head's weights in groups a person chooses bits for and maps each Core ML
const to the NeMo tensors it stands for; `sensitivity` measures, group by group and bit width
by bit width, how far palettizing that group alone moves the speaker probabilities on realistic
streaming states; `allocate` picks bits per group under a size budget; `recipe` is the
person-readable file of that choice and its translation into per-tensor bit widths.
"""

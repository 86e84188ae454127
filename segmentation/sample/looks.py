"""Everyday colours of a street, for the natural looks of the sample scenes.

The Cityscapes looks paint each class in its label colour: an easy task, in which a colour
lookup alone finds most labels. The natural looks paint what a camera sees instead: grey asphalt,
paving, facades of plaster, brick and concrete, cars in the usual paints, people in varied
clothes. The tables hold RGB base colours; ``Palette`` (``world.py``) draws from them.
"""

from __future__ import annotations

# One base colour per label name, for the labels no table below varies.
BASE = {
    "road": (88, 88, 91),
    "sidewalk": (150, 146, 140),
    "parking": (108, 106, 104),
    "rail track": (116, 102, 90),
    "ground": (128, 118, 104),
    "building": (180, 165, 140),
    "wall": (150, 145, 136),
    "fence": (112, 110, 104),
    "guard rail": (175, 175, 180),
    "bridge": (130, 126, 120),
    "pole": (128, 130, 132),
    "traffic light": (38, 38, 40),
    "traffic sign": (205, 205, 210),
    "vegetation": (66, 96, 44),
    "terrain": (112, 116, 66),
    "sky": (110, 150, 205),
    "person": (60, 62, 70),
    "rider": (60, 62, 70),
    "car": (150, 150, 155),
    "truck": (210, 210, 214),
    "bus": (215, 190, 70),
    "train": (220, 188, 60),
    "motorcycle": (40, 40, 46),
    "bicycle": (44, 44, 48),
    "static": (100, 96, 90),
    "dynamic": (70, 105, 80),
    "ego vehicle": (42, 44, 52),
}

# Choices per label name: each object (or each street, for the ground) takes one of them.
CHOICES = {
    # asphalt from fresh and dark to old and pale
    "road": [(72, 72, 76), (82, 82, 85), (92, 91, 92), (100, 99, 98), (78, 79, 84)],
    # concrete slabs, beige and reddish pavers
    "sidewalk": [
        (150, 146, 140),
        (166, 158, 148),
        (140, 127, 120),
        (128, 128, 130),
        (156, 139, 126),
    ],
    "parking": [(108, 106, 104), (96, 96, 98), (126, 118, 108)],
    "rail track": [(116, 102, 90), (104, 98, 90)],
    "ground": [(128, 118, 104), (140, 128, 110), (110, 100, 86)],
    # grass, dry grass, bare soil
    "terrain": [(92, 114, 58), (116, 124, 70), (138, 126, 86), (118, 102, 76), (84, 100, 52)],
    "vegetation": [(62, 92, 40), (72, 106, 48), (50, 76, 38), (86, 110, 52), (58, 84, 54)],
    "wall": [(150, 145, 136), (124, 120, 112), (168, 158, 138), (108, 104, 100), (140, 110, 90)],
    # metal, painted green, wood, white
    "fence": [(112, 110, 106), (58, 86, 66), (128, 98, 70), (196, 196, 190), (52, 52, 56)],
    # galvanised, anthracite, dark green
    "pole": [(138, 140, 142), (118, 120, 122), (62, 64, 68), (52, 72, 62)],
    "car": [
        (222, 222, 225),  # white
        (172, 174, 178),  # silver
        (30, 30, 34),  # black
        (72, 74, 80),  # dark grey
        (40, 60, 120),  # blue
        (140, 28, 30),  # red
        (32, 76, 58),  # green
        (196, 186, 166),  # beige
        (110, 140, 170),  # light blue
    ],
    "truck": [(212, 212, 215), (170, 40, 36), (52, 76, 140), (172, 174, 178), (226, 190, 50)],
    "bus": [(216, 190, 66), (220, 220, 224), (176, 44, 40), (60, 96, 160)],
    "train": [(222, 190, 58), (226, 226, 228), (186, 48, 44)],
    "motorcycle": [(32, 32, 36), (150, 30, 30), (168, 170, 174), (44, 70, 140)],
    "bicycle": [(34, 34, 38), (176, 178, 182), (160, 36, 36), (44, 80, 150), (40, 110, 70)],
    # bins, benches, advertising columns, switch boxes
    "static": [(60, 96, 66), (120, 90, 60), (150, 150, 146), (210, 120, 40), (92, 92, 96)],
    "dynamic": [(56, 110, 74), (52, 82, 140), (124, 124, 120), (120, 84, 56)],
}

# Clothes: tops, trousers and skin tones.
TOPS = [
    (38, 38, 42),  # black
    (30, 44, 90),  # navy
    (150, 32, 38),  # red
    (206, 206, 200),  # white
    (112, 112, 118),  # grey
    (74, 90, 50),  # olive
    (182, 152, 104),  # beige
    (62, 102, 164),  # blue
    (206, 172, 44),  # yellow
    (122, 70, 120),  # purple
    (212, 112, 58),  # orange
    (96, 60, 44),  # brown
]
TROUSERS = [(46, 60, 96), (30, 30, 34), (88, 88, 94), (150, 132, 96), (72, 52, 40), (34, 40, 64)]
SKIN = [(232, 192, 164), (210, 164, 130), (176, 124, 92), (124, 86, 62), (90, 62, 46)]

# Building facades (plaster, brick, concrete, sandstone, modern) and their windows.
FACADES = [
    (206, 192, 162),  # cream plaster
    (202, 168, 112),  # ochre plaster
    (214, 212, 204),  # white plaster
    (204, 176, 164),  # pale pink plaster
    (212, 198, 150),  # pale yellow plaster
    (168, 176, 182),  # blue-grey plaster
    (150, 80, 60),  # red brick
    (126, 72, 56),  # dark brick
    (140, 140, 137),  # concrete
    (116, 114, 110),  # dark concrete
    (190, 166, 126),  # sandstone
    (72, 76, 82),  # dark modern cladding
]
WINDOWS = [(38, 44, 54), (50, 58, 70), (28, 32, 38), (82, 100, 120), (64, 70, 76)]

# Skies: (zenith, horizon) of a clear, a pale and a hazy day.
SKIES = [
    ((78, 126, 196), (172, 194, 224)),
    ((104, 146, 204), (186, 202, 228)),
    ((120, 152, 198), (190, 204, 226)),
]

# Traffic signs (face, inner) by form: 0 circle, 1 triangle, 2 diamond, 3 rectangle.
SIGNS = {
    0: [((196, 34, 38), (232, 232, 230)), ((34, 84, 168), (232, 232, 230))],
    1: [((200, 38, 38), (234, 234, 232))],
    2: [((230, 230, 226), (238, 186, 34))],
    3: [
        ((36, 86, 166), (232, 232, 230)),
        ((232, 200, 44), (36, 36, 36)),
        ((228, 228, 226), (40, 40, 42)),
        ((40, 118, 72), (232, 232, 230)),
    ],
}
# Traffic lights: dark housings; red, amber and green lamps, lit and unlit.
HOUSINGS = [(36, 36, 38), (48, 50, 52), (28, 30, 30)]
LAMPS_LIT = [(240, 50, 36), (250, 176, 34), (60, 226, 140)]
LAMPS_OFF = [(76, 36, 32), (82, 64, 34), (32, 70, 52)]

GLASS = [(34, 38, 46), (44, 50, 60), (26, 28, 32)]  # car windows
TYRE = (26, 26, 28)
RIM = (118, 118, 122)

# ruff: noqa: E501 - one label a line, and two of v2.0's are longer than a code line
"""The label lists of Mapillary Vistas v1.2 (66 labels) and v2.0 (124), as the download's
config_v1.2.json and config_v2.0.json give them, for the sample generator to write its own
config files. The toolkit itself reads the class list from the dataset's file
(data/mapillary_labels.py), never from here.

One label a line, in the config's order (a label's position is its index in the label PNGs):
name | readable name | colour r,g,b | flags: i = has instances, e = evaluated. Sources: the
labels, colours and flags as public copies of the two configs list them (v1.2:
facebookresearch/Mask2Former's register_mapillary_vistas.py, 65 of 66 evaluated; v2.0: 116 of
124 evaluated, "8 void or crowd" as mmsegmentation's MapillaryDataset_v2 counts them).
"""

from __future__ import annotations

V12 = """
animal--bird|Bird|165,42,42|ie
animal--ground-animal|Ground Animal|0,192,0|ie
construction--barrier--curb|Curb|196,196,196|e
construction--barrier--fence|Fence|190,153,153|e
construction--barrier--guard-rail|Guard Rail|180,165,180|e
construction--barrier--other-barrier|Barrier|90,120,150|e
construction--barrier--wall|Wall|102,102,156|e
construction--flat--bike-lane|Bike Lane|128,64,255|e
construction--flat--crosswalk-plain|Crosswalk - Plain|140,140,200|ie
construction--flat--curb-cut|Curb Cut|170,170,170|e
construction--flat--parking|Parking|250,170,160|e
construction--flat--pedestrian-area|Pedestrian Area|96,96,96|e
construction--flat--rail-track|Rail Track|230,150,140|e
construction--flat--road|Road|128,64,128|e
construction--flat--service-lane|Service Lane|110,110,110|e
construction--flat--sidewalk|Sidewalk|244,35,232|e
construction--structure--bridge|Bridge|150,100,100|e
construction--structure--building|Building|70,70,70|e
construction--structure--tunnel|Tunnel|150,120,90|e
human--person|Person|220,20,60|ie
human--rider--bicyclist|Bicyclist|255,0,0|ie
human--rider--motorcyclist|Motorcyclist|255,0,100|ie
human--rider--other-rider|Other Rider|255,0,200|ie
marking--crosswalk-zebra|Lane Marking - Crosswalk|200,128,128|ie
marking--general|Lane Marking - General|255,255,255|e
nature--mountain|Mountain|64,170,64|e
nature--sand|Sand|230,160,50|e
nature--sky|Sky|70,130,180|e
nature--snow|Snow|190,255,255|e
nature--terrain|Terrain|152,251,152|e
nature--vegetation|Vegetation|107,142,35|e
nature--water|Water|0,170,30|e
object--banner|Banner|255,255,128|ie
object--bench|Bench|250,0,30|ie
object--bike-rack|Bike Rack|100,140,180|ie
object--billboard|Billboard|220,220,220|ie
object--catch-basin|Catch Basin|220,128,128|ie
object--cctv-camera|CCTV Camera|222,40,40|ie
object--fire-hydrant|Fire Hydrant|100,170,30|ie
object--junction-box|Junction Box|40,40,40|ie
object--mailbox|Mailbox|33,33,33|ie
object--manhole|Manhole|100,128,160|ie
object--phone-booth|Phone Booth|142,0,0|ie
object--pothole|Pothole|70,100,150|e
object--street-light|Street Light|210,170,100|ie
object--support--pole|Pole|153,153,153|ie
object--support--traffic-sign-frame|Traffic Sign Frame|128,128,128|ie
object--support--utility-pole|Utility Pole|0,0,80|ie
object--traffic-light|Traffic Light|250,170,30|ie
object--traffic-sign--back|Traffic Sign (Back)|192,192,192|ie
object--traffic-sign--front|Traffic Sign (Front)|220,220,0|ie
object--trash-can|Trash Can|140,140,20|ie
object--vehicle--bicycle|Bicycle|119,11,32|ie
object--vehicle--boat|Boat|150,0,255|ie
object--vehicle--bus|Bus|0,60,100|ie
object--vehicle--car|Car|0,0,142|ie
object--vehicle--caravan|Caravan|0,0,90|ie
object--vehicle--motorcycle|Motorcycle|0,0,230|ie
object--vehicle--on-rails|On Rails|0,80,100|e
object--vehicle--other-vehicle|Other Vehicle|128,64,64|ie
object--vehicle--trailer|Trailer|0,0,110|ie
object--vehicle--truck|Truck|0,0,70|ie
object--vehicle--wheeled-slow|Wheeled Slow|0,0,192|ie
void--car-mount|Car Mount|32,32,32|e
void--ego-vehicle|Ego Vehicle|120,10,10|e
void--unlabeled|Unlabeled|0,0,0|
"""

V20 = """
animal--bird|Bird|165,42,42|ie
animal--ground-animal|Ground Animal|0,192,0|ie
construction--barrier--ambiguous|Ambiguous Barrier|250,170,31|
construction--barrier--concrete-block|Concrete Block|250,170,32|e
construction--barrier--curb|Curb|196,196,196|e
construction--barrier--fence|Fence|190,153,153|e
construction--barrier--guard-rail|Guard Rail|180,165,180|e
construction--barrier--other-barrier|Barrier|90,120,150|e
construction--barrier--road-median|Road Median|250,170,33|e
construction--barrier--road-side|Road Side|250,170,34|e
construction--barrier--separator|Lane Separator|128,128,128|e
construction--barrier--temporary|Temporary Barrier|250,170,35|ie
construction--barrier--wall|Wall|102,102,156|e
construction--flat--bike-lane|Bike Lane|128,64,255|e
construction--flat--crosswalk-plain|Crosswalk - Plain|140,140,200|ie
construction--flat--curb-cut|Curb Cut|170,170,170|e
construction--flat--driveway|Driveway|250,170,36|ie
construction--flat--parking|Parking|250,170,160|e
construction--flat--parking-aisle|Parking Aisle|250,170,37|e
construction--flat--pedestrian-area|Pedestrian Area|96,96,96|e
construction--flat--rail-track|Rail Track|230,150,140|e
construction--flat--road|Road|128,64,128|e
construction--flat--road-shoulder|Road Shoulder|110,110,110|e
construction--flat--service-lane|Service Lane|110,110,110|e
construction--flat--sidewalk|Sidewalk|244,35,232|e
construction--flat--traffic-island|Traffic Island|128,196,128|e
construction--structure--bridge|Bridge|150,100,100|e
construction--structure--building|Building|70,70,70|e
construction--structure--garage|Garage|150,150,150|e
construction--structure--tunnel|Tunnel|150,120,90|e
human--person--individual|Person|220,20,60|ie
human--person--person-group|Person Group|220,20,60|
human--rider--bicyclist|Bicyclist|255,0,0|ie
human--rider--motorcyclist|Motorcyclist|255,0,100|ie
human--rider--other-rider|Other Rider|255,0,200|ie
marking--continuous--dashed|Lane Marking - Dashed Line|255,255,255|e
marking--continuous--solid|Lane Marking - Straight Line|255,255,255|e
marking--continuous--zigzag|Lane Marking - Zigzag Line|250,170,29|e
marking--discrete--ambiguous|Lane Marking - Ambiguous|250,170,28|
marking--discrete--arrow--left|Lane Marking - Arrow (Left)|250,170,26|ie
marking--discrete--arrow--other|Lane Marking - Arrow (Other)|250,170,25|ie
marking--discrete--arrow--right|Lane Marking - Arrow (Right)|250,170,24|ie
marking--discrete--arrow--split-left-or-straight|Lane Marking - Arrow (Split Left or Straight)|250,170,22|ie
marking--discrete--arrow--split-right-or-straight|Lane Marking - Arrow (Split Right or Straight)|250,170,21|ie
marking--discrete--arrow--straight|Lane Marking - Arrow (Straight)|250,170,20|ie
marking--discrete--crosswalk-zebra|Lane Marking - Crosswalk|255,255,255|ie
marking--discrete--give-way-row|Lane Marking - Give Way (Row)|250,170,19|ie
marking--discrete--give-way-single|Lane Marking - Give Way (Single)|250,170,18|ie
marking--discrete--hatched--chevron|Lane Marking - Hatched (Chevron)|250,170,12|e
marking--discrete--hatched--diagonal|Lane Marking - Hatched (Diagonal)|250,170,11|e
marking--discrete--other-marking|Lane Marking - Other|255,255,255|ie
marking--discrete--stop-line|Lane Marking - Stop Line|255,255,255|ie
marking--discrete--symbol--bicycle|Lane Marking - Symbol (Bicycle)|250,170,16|ie
marking--discrete--symbol--other|Lane Marking - Symbol (Other)|250,170,15|ie
marking--discrete--text|Lane Marking - Text|250,170,15|ie
marking-only--continuous--dashed|Lane Marking (only) - Dashed Line|255,255,255|e
marking-only--discrete--crosswalk-zebra|Lane Marking (only) - Crosswalk|255,255,255|e
marking-only--discrete--other-marking|Lane Marking (only) - Other|255,255,255|e
marking-only--discrete--text|Lane Marking (only) - Test|255,255,255|e
nature--mountain|Mountain|64,170,64|e
nature--sand|Sand|230,160,50|e
nature--sky|Sky|70,130,180|e
nature--snow|Snow|190,255,255|e
nature--terrain|Terrain|152,251,152|e
nature--vegetation|Vegetation|107,142,35|e
nature--water|Water|0,170,30|e
object--banner|Banner|255,255,128|ie
object--bench|Bench|250,0,30|ie
object--bike-rack|Bike Rack|100,140,180|ie
object--catch-basin|Catch Basin|220,128,128|ie
object--cctv-camera|CCTV Camera|222,40,40|ie
object--fire-hydrant|Fire Hydrant|100,170,30|ie
object--junction-box|Junction Box|40,40,40|ie
object--mailbox|Mailbox|33,33,33|ie
object--manhole|Manhole|100,128,160|ie
object--parking-meter|Parking Meter|20,20,255|ie
object--phone-booth|Phone Booth|142,0,0|ie
object--pothole|Pothole|70,100,150|e
object--sign--advertisement|Signage - Advertisement|250,171,30|ie
object--sign--ambiguous|Signage - Ambiguous|250,172,30|i
object--sign--back|Signage - Back|250,173,30|ie
object--sign--information|Signage - Information|250,174,30|ie
object--sign--other|Signage - Other|250,175,30|ie
object--sign--store|Signage - Store|250,176,30|ie
object--street-light|Street Light|210,170,100|ie
object--support--pole|Pole|153,153,153|ie
object--support--pole-group|Pole Group|153,153,153|
object--support--traffic-sign-frame|Traffic Sign Frame|128,128,128|ie
object--support--utility-pole|Utility Pole|0,0,80|ie
object--traffic-cone|Traffic Cone|210,60,60|ie
object--traffic-light--general-single|Traffic Light - General (Single)|250,170,30|ie
object--traffic-light--pedestrians|Traffic Light - Pedestrians|250,170,30|ie
object--traffic-light--general-upright|Traffic Light - General (Upright)|250,170,30|ie
object--traffic-light--general-horizontal|Traffic Light - General (Horizontal)|250,170,30|ie
object--traffic-light--cyclists|Traffic Light - Cyclists|250,170,30|ie
object--traffic-light--other|Traffic Light - Other|250,170,30|ie
object--traffic-sign--ambiguous|Traffic Sign - Ambiguous|192,192,192|i
object--traffic-sign--back|Traffic Sign (Back)|192,192,192|ie
object--traffic-sign--direction-back|Traffic Sign - Direction (Back)|192,192,192|ie
object--traffic-sign--direction-front|Traffic Sign - Direction (Front)|220,220,0|ie
object--traffic-sign--front|Traffic Sign (Front)|220,220,0|ie
object--traffic-sign--information-parking|Traffic Sign - Parking|0,0,196|ie
object--traffic-sign--temporary-back|Traffic Sign - Temporary (Back)|192,192,192|ie
object--traffic-sign--temporary-front|Traffic Sign - Temporary (Front)|220,220,0|ie
object--trash-can|Trash Can|140,140,20|ie
object--vehicle--bicycle|Bicycle|119,11,32|ie
object--vehicle--boat|Boat|150,0,255|ie
object--vehicle--bus|Bus|0,60,100|ie
object--vehicle--car|Car|0,0,142|ie
object--vehicle--caravan|Caravan|0,0,90|ie
object--vehicle--motorcycle|Motorcycle|0,0,230|ie
object--vehicle--on-rails|On Rails|0,80,100|ie
object--vehicle--other-vehicle|Other Vehicle|128,64,64|ie
object--vehicle--trailer|Trailer|0,0,110|ie
object--vehicle--truck|Truck|0,0,70|ie
object--vehicle--vehicle-group|Vehicle Group|0,0,142|
object--vehicle--wheeled-slow|Wheeled Slow|0,0,192|ie
object--water-valve|Water Valve|170,170,170|ie
void--car-mount|Car Mount|32,32,32|e
void--dynamic|Dynamic|111,74,0|e
void--ego-vehicle|Ego Vehicle|120,10,10|e
void--ground|Ground|81,0,81|e
void--static|Static|111,111,0|e
void--unlabeled|Unlabeled|0,0,0|
"""


def config_labels(version: str) -> list[dict]:
    """The "labels" list of config_VERSION.json, entries with the real files' keys."""
    table = {"v1.2": V12, "v2.0": V20}[version]
    labels = []
    for line in table.strip().splitlines():
        name, readable, colour, flags = line.split("|")
        labels.append(
            {
                "color": [int(value) for value in colour.split(",")],
                "instances": "i" in flags,
                "readable": readable,
                "name": name,
                "evaluate": "e" in flags,
            }
        )
    return labels

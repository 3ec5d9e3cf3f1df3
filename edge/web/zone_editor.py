"""The zone editor on the device's page (`/zones`): the installer clicks a zone's points on the
live picture, names it and picks its kind; the device checks the zones with the config's own
rules and gives back the YAML to paste into the config. It writes nothing: a page that only
shows cannot change what the device does."""


import html
import json
from dataclasses import asdict
from typing import Any, Dict, List, Sequence, Tuple

import yaml

from edge.config import config_from_dict
from edge.config.rules import ZONE_KINDS
from edge.errors import ConfigError

MAX_REQUEST_BYTES = 65536  # 16 zones of 64 points are about 20 KB of JSON
_MAX_ZONES = 32
_DIGITS = 3  # shares of the frame to 0.001: a pixel of a 1000-pixel-wide picture


def configured(zones: Sequence[Any]) -> List[Dict[str, Any]]:
    """A camera's zones (ZoneConfig) as the editor's JSON."""
    return [asdict(zone) for zone in zones]


def zones_yaml(camera: str, zones: List[Dict[str, Any]]) -> str:
    """The camera's `zones:` block, one zone per line, as it goes into the config."""
    lines = [f"# camera {camera}: paste under its entry in `cameras:` (for `run --source`, as the top-level "
             f"`zones:`)", "zones:" if zones else "zones: []"]
    for zone in zones:
        points = ", ".join(f"[{x:g}, {y:g}]" for x, y in zone["polygon"])
        extra = "".join(f", {key}: {zone[key]:g}" for key in ("min_dwell_s", "lookahead_s", "cooldown_s")
                        if zone["kind"] == "danger" and key in zone)
        lines.append(f"- {{name: {json.dumps(zone['name'])}, kind: {zone['kind']}, polygon: [{points}]{extra}}}")
    return "\n".join(lines) + "\n"


def check_zones(body: bytes) -> Tuple[int, Dict[str, Any]]:
    """(HTTP status, JSON answer) for the editor's {"camera": ..., "zones": [...]}: the YAML, or
    the config's one-line problem."""
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return 400, {"problem": "the request is not JSON"}
    if not isinstance(request, dict) or not isinstance(request.get("zones"), list):
        return 400, {"problem": "send {\"camera\": NAME, \"zones\": [...]}"}
    zones = request["zones"]
    if len(zones) > _MAX_ZONES:
        return 422, {"problem": f"at most {_MAX_ZONES} zones per camera"}
    camera = str(request.get("camera", ""))[:100]
    try:
        rounded = [_rounded(zone) for zone in zones]
        config_from_dict({"zones": rounded}, source="zones")
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as exc:
        message = str(exc) if isinstance(exc, ConfigError) else "each zone needs a name, a kind and [x, y] points"
        return 422, {"problem": message}
    text = zones_yaml(camera, rounded)
    # What the installer pastes must load to the same zones: read it back with the config's loader.
    loaded = config_from_dict(yaml.safe_load(text), source="zones")
    assert [asdict(zone)["polygon"] for zone in loaded.zones] == [zone["polygon"] for zone in rounded]
    return 200, {"yaml": text, "zones": [asdict(zone) for zone in loaded.zones]}


def _rounded(zone: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(zone)
    out["polygon"] = [[round(float(x), _DIGITS), round(float(y), _DIGITS)] for x, y in zone["polygon"]]
    return out


def editor_page(cameras: Sequence[str]) -> str:
    options = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in cameras)
    kinds = "".join(f'<option value="{k}">{k}</option>' for k in ZONE_KINDS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fall-edge: zones</title>
<style>body{{font-family:sans-serif;margin:1em;background:#111;color:#eee}}a{{color:#8cf}}
#stage{{position:relative;display:inline-block;cursor:crosshair}}#stage img{{display:block;max-width:90vw}}
#stage svg{{position:absolute;left:0;top:0;width:100%;height:100%}}
textarea{{width:90vw;height:10em;background:#222;color:#eee}}#problem{{color:#f77}}
label{{margin-right:1em}}li{{margin:.2em 0}}</style></head>
<body><h1>Zones</h1>
<p>Click the zone's corners on the picture, in order around it; name it, pick its kind, then
<b>Add zone</b>. The device checks the zones with the config's rules and gives the YAML to paste
into the config (README "Zones"). Nothing is changed on the device.</p>
<p><label>camera <select id="camera">{options}</select></label>
<label>name <input id="name" value="zone1" size="12"></label>
<label>kind <select id="kind">{kinds}</select></label>
<button id="add">Add zone</button> <button id="undo">Undo point</button>
<button id="clear">Clear points</button></p>
<p id="problem" role="alert"></p>
<div id="stage"><img id="live" alt="live view"><svg id="overlay" viewBox="0 0 1 1"
 preserveAspectRatio="none"></svg></div>
<h2>Zones of this camera</h2><ul id="zones"></ul>
<h2>YAML</h2><textarea id="yaml" readonly></textarea>
<p><a href="/">live view</a></p>
<script>
const colours = {{bed: "#3ca0ff", danger: "#e62828", watch: "#ffd200"}};
let configured = {{}}, zones = [], points = [];
const $ = (id) => document.getElementById(id);
function svg(tag, attrs) {{
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}}
function draw() {{
  const overlay = $("overlay");
  overlay.replaceChildren();
  for (const zone of zones) {{
    overlay.appendChild(svg("polygon", {{points: zone.polygon.map(p => p.join(",")).join(" "),
      fill: colours[zone.kind], "fill-opacity": 0.2, stroke: colours[zone.kind], "stroke-width": 0.004}}));
  }}
  if (points.length) {{
    overlay.appendChild(svg("polyline", {{points: points.map(p => p.join(",")).join(" "), fill: "none",
      stroke: "#fff", "stroke-width": 0.004}}));
    for (const [x, y] of points) overlay.appendChild(svg("circle", {{cx: x, cy: y, r: 0.006, fill: "#fff"}}));
  }}
  const list = $("zones");
  list.replaceChildren();
  zones.forEach((zone, index) => {{
    const item = document.createElement("li");
    item.textContent = zone.name + " (" + zone.kind + ", " + zone.polygon.length + " points) ";
    const remove = document.createElement("button");
    remove.textContent = "Remove";
    remove.onclick = () => {{ zones.splice(index, 1); check(zones); }};
    item.appendChild(remove);
    list.appendChild(item);
  }});
}}
async function check(candidate) {{
  const answer = await fetch("/zones/check", {{method: "POST", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{camera: $("camera").value, zones: candidate}})}});
  const data = await answer.json();
  if (!answer.ok) {{ $("problem").textContent = data.problem; return false; }}
  $("problem").textContent = "";
  zones = data.zones;
  $("yaml").value = data.yaml;
  draw();
  return true;
}}
function load() {{
  const camera = $("camera").value;
  $("live").src = "/stream/" + encodeURIComponent(camera) + ".mjpg";
  zones = (configured[camera] || []).slice();
  points = [];
  check(zones);
}}
$("stage").addEventListener("click", (event) => {{
  const box = $("live").getBoundingClientRect();
  points.push([(event.clientX - box.left) / box.width, (event.clientY - box.top) / box.height]
    .map(v => Math.round(Math.min(1, Math.max(0, v)) * 1000) / 1000));
  draw();
}});
$("add").onclick = async () => {{
  const zone = {{name: $("name").value.trim(), kind: $("kind").value, polygon: points}};
  if (await check(zones.concat([zone]))) {{ points = []; draw(); }}
}};
$("undo").onclick = () => {{ points.pop(); draw(); }};
$("clear").onclick = () => {{ points = []; draw(); }};
$("camera").onchange = load;
fetch("/zones.json").then(r => r.json()).then(data => {{ configured = data; load(); }});
</script></body></html>
"""

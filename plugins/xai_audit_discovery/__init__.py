"""Discoverers: cues nobody named, found by looking, each proposed with an intervention that removes it.

* ``attribution-clusters``: SpRAy (Lapuschkin et al. 2019): gradient x input maps of the predicted class,
  clustered per class; a cluster that looks at one fixed place outside the class's own regions (a watermark,
  a corner mark) is proposed, with the place painted in the data's own colour as its intervention.
* ``property-slices``: image properties (brightness, contrast, saturation, colourfulness, sharpness, border
  colour) that separate the images predicted one class from the others; each proposed with an intervention
  that moves the property back to the data's typical value.
* ``error-slices``: slices where the model is worse (accuracy, or confidence without labels): quantile bins of
  image properties (and pairs), metadata values, clusters of its penultimate layer; each a rule the host applies
  to the held-back images, comparing the model inside and outside it.
* ``property-shifts``: brightness, contrast, saturation and sharpness shifted on every image; the class the
  predictions drain into is a candidate (a cue the audited images do not show, such as darkness learned from
  darkened training images), confirmed by the same shift on the held-back images.

The host confirms every candidate on the images the discoverer did not see (``xai_audit/run/discovery.py``).
"""

from __future__ import annotations

from xai_audit.api import DiscovererPlugin, hookimpl
from xai_audit_discovery.shifts import PropertyShiftsDiscoverer
from xai_audit_discovery.slices import PropertySlicesDiscoverer
from xai_audit_discovery.spray import AttributionClustersDiscoverer
from xai_audit_discovery.weak_slices import ErrorSlicesDiscoverer


@hookimpl
def register_discoverers() -> list[type[DiscovererPlugin]]:
    return [AttributionClustersDiscoverer, PropertySlicesDiscoverer, PropertyShiftsDiscoverer, ErrorSlicesDiscoverer]

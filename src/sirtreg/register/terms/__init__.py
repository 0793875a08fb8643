"""Loss terms of the registration energy, each a small torch module with one job.

Image and label terms take tensors sampled on the working reference grid:
``forward(reference, warped, mask)`` with shapes (C, D, H, W) or (D, H, W) and a
boolean/float mask (D, H, W) of voxels that count. The regularisers (springs,
folding) take the displacement (D, H, W, 3) in mm.
"""

from sirtreg.register.terms.folding import FoldingPenalty
from sirtreg.register.terms.label_ssd import LabelSSD
from sirtreg.register.terms.mind import DescriptorSSD, mind_ssc
from sirtreg.register.terms.mutual_information import MutualInformation
from sirtreg.register.terms.spring import SpringRegulariser

__all__ = ["DescriptorSSD", "FoldingPenalty", "LabelSSD", "MutualInformation", "SpringRegulariser", "mind_ssc"]

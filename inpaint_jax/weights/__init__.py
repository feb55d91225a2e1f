"""Reading other frameworks' weight files into this project's parameters.

Nothing is downloaded and no pickled code is executed: the user brings the
file. `vgg`: torchvision / Keras VGG-16 and VGG-19 (NPS texture loss,
perceptual and style losses).
"""

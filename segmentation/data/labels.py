"""Label schemes: how stored label values become training targets, and back."""

# The one value that means "no label here", used by the label lookup tables, padding,
# the losses and the confusion matrix alike.
IGNORE_INDEX = 255

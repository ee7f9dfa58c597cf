"""Image work: preprocessing (limits, EXIF, modes, resize), domain adaptation, the pixels'
colour.  Pillow and numpy; OpenCV is imported only by the steps that need it."""

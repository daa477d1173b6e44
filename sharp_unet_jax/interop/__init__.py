"""Interoperation with Keras: reading .h5/.keras files and the reference model."""

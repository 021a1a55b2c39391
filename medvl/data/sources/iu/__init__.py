"""The Indiana University chest X-ray collection (Open-i): reports, DICOM headers, MeSH labels.

:mod:`.xray` reads the reports into Study records, :mod:`.headers` the real DICOM header table
shipped with torchxrayvision, :mod:`.mesh` maps the annotators' MeSH terms to CheXpert-14.
"""

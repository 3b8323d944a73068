"""Stage 3, running: region masks, baseline predictions, explainers and hypotheses (``steps``), where they run
(``executors``: this process or Ray), how long they may take (``limits``), and the content-addressed ``cache``."""

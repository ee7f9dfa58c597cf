from services.inference.worker.service import main

main()

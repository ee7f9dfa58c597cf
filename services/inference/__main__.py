from services.inference.worker import main

main()
